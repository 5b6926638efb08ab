#include "network.h"

#ifdef EASYINV_AOTI
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#endif
#ifdef EASYINV_CUDA
#include <c10/cuda/CUDAStream.h>
#endif
#include <torch/version.h>

namespace easyinv {
namespace {

bool EndsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// As Python's nn.Module.to(dtype): C++'s Module::to(dtype) would also convert integer buffers (CLIP's int64
// position_ids), which then fail as embedding indices.
void ConvertFloatingTensors(torch::jit::Module& module, c10::ScalarType dtype) {
  auto convert = [dtype](at::Tensor tensor) {
    if (tensor.is_floating_point() && tensor.scalar_type() != dtype) tensor.set_data(tensor.to(dtype));
  };
  for (const auto& parameter : module.parameters()) convert(parameter);
  for (const auto& buffer : module.buffers()) convert(buffer);
}

void ConvertToChannelsLast(torch::jit::Module& module) {
  auto convert = [](at::Tensor tensor) {
    if (tensor.dim() == 4) tensor.set_data(ChannelsLastIfImage(tensor));
  };
  for (const auto& parameter : module.parameters()) convert(parameter);
  for (const auto& buffer : module.buffers()) convert(buffer);
}

class TorchScriptNetwork final : public Network {
 public:
  explicit TorchScriptNetwork(torch::jit::Module module) : module_(std::move(module)) {}

  c10::IValue Run(const std::vector<at::Tensor>& inputs) override {
    return module_.forward(std::vector<c10::IValue>(inputs.begin(), inputs.end()));
  }

 private:
  torch::jit::Module module_;
};

#ifdef EASYINV_AOTI

class CompiledNetwork final : public Network {
 public:
  CompiledNetwork(const std::string& path, const c10::Device& device)
      : device_(device), loader_(path, "model", false, 1, device.is_cuda() ? device.index() : -1) {}

  c10::IValue Run(const std::vector<at::Tensor>& inputs) override {
    void* stream = nullptr;  // the CPU has none
#ifdef EASYINV_CUDA
    if (device_.is_cuda()) stream = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
#endif
    std::vector<at::Tensor> outputs = loader_.run(inputs, stream);
    if (outputs.size() == 1) return outputs[0];
    return c10::ivalue::Tuple::create(std::vector<c10::IValue>(outputs.begin(), outputs.end()));
  }

 private:
  c10::Device device_;
  torch::inductor::AOTIModelPackageLoader loader_;
};

#endif

}  // namespace

bool CompiledPackagesSupported() {
#ifdef EASYINV_AOTI
  return true;
#else
  return false;
#endif
}

std::shared_ptr<Network> LoadNetwork(const std::string& path, const c10::Device& device, c10::ScalarType dtype,
                                     bool channels_last) {
  if (!EndsWith(path, ".pt2")) {
    c10::InferenceMode normal_tensors(false);  // parameters must stay ordinary tensors for set_data
    torch::jit::Module module = torch::jit::load(path, device);
    ConvertFloatingTensors(module, dtype);
    if (channels_last) ConvertToChannelsLast(module);
    module.eval();
    return std::make_shared<TorchScriptNetwork>(std::move(module));
  }
  TORCH_CHECK(!channels_last, "channelsLast converts a TorchScript module's weights; a .pt2 package runs the memory "
              "format it was compiled for: load it without channelsLast");
#ifdef EASYINV_AOTI
  return std::make_shared<CompiledNetwork>(path, device);
#else
  TORCH_CHECK(false, "this easyinv links LibTorch ", TORCH_VERSION, ", which cannot load compiled .pt2 packages "
              "(AOTInductor's loader came with LibTorch 2.6): rebuild against PyTorch >= 2.6 "
              "(LIBTORCH_USE_PYTORCH=1 npm rebuild easyinv), or use the bundle's TorchScript files");
#endif
}

}  // namespace easyinv
