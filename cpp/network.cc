#include "network.h"

#ifdef EASYINV_AOTI
#include <caffe2/serialize/inline_container.h>
#include <sys/utsname.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cctype>
#include <sstream>
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

// The value of `key` in one of the metadata records Inductor writes into a package (flat JSON of strings).
std::string MetadataValue(const std::string& json, const std::string& key) {
  size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  at = json.find_first_not_of(" \t\r\n:", at + key.size() + 2);
  if (at == std::string::npos || json[at] != '"') return "";
  const size_t end = json.find('"', at + 1);
  return end == std::string::npos ? "" : json.substr(at + 1, end - at - 1);
}

// Whether this CPU has the instructions Inductor's name `isa` stands for. Only x86 is checked; elsewhere the machine
// check is all there is.
bool CpuHas(const std::string& isa) {
  if (isa == "invalid_vec_isa") return true;  // compiled without vector code
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd");
  }
  if (isa == "avx512_vnni") return __builtin_cpu_supports("avx512vnni");
  if (isa == "amx_tile") return __builtin_cpu_supports("amx-tile");
  return false;
#else
  return true;
#endif
}

// Inductor compiles a package's CPU code for the vector instructions of the machine that compiled it, and a CPU without
// them dies of SIGILL in the middle of a forward: refuse such a package before its library is loaded.
void CheckPackageRunsHere(const std::string& path, const c10::Device& device) {
  caffe2::serialize::PyTorchStreamReader reader(path);
  for (const std::string& name : reader.getAllRecords()) {
    if (!EndsWith(name, "_metadata.json")) continue;
    auto [data, size] = reader.getRecord(name);
    const std::string json(static_cast<const char*>(data.get()), size);
    const std::string compiled_for = MetadataValue(json, "AOTI_DEVICE_KEY");
    TORCH_CHECK(compiled_for.empty() || compiled_for == c10::DeviceTypeName(device.type(), true),
                path, " was compiled for ", compiled_for, ", not ", device.str(),
                ": load it on that device, or compile the bundle for this one (tools/export_sd.py --format pt2 --device)");
    if (!device.is_cpu()) continue;
    utsname host{};
    uname(&host);
    const std::string machine = MetadataValue(json, "AOTI_MACHINE");
    TORCH_CHECK(machine.empty() || machine == host.machine, path, " was compiled for ", machine, " processors, and this is ",
                host.machine, ": compile the bundle on this machine (tools/export_sd.py --format pt2)");
    std::istringstream isas(MetadataValue(json, "AOTI_CPU_ISA"));
    for (std::string isa; isas >> isa;) {
      std::transform(isa.begin(), isa.end(), isa.begin(), [](unsigned char c) { return std::tolower(c); });
      TORCH_CHECK(CpuHas(isa), path, " was compiled for CPUs with ", isa, " instructions, which this CPU lacks: compile "
                  "the bundle on this machine, or for a level it has (tools/export_sd.py --format pt2 --cpu-isa avx2)");
    }
  }
}

class CompiledNetwork final : public Network {
 public:
  CompiledNetwork(const std::string& path, const c10::Device& device)
      : device_(device), loader_((CheckPackageRunsHere(path, device), path), "model", false, 1,
                                 device.is_cuda() ? device.index() : -1) {}

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
