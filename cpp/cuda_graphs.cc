#include "cuda_graphs.h"

#include <map>
#include <optional>
#include <sstream>
#include <string>

#ifdef EASYINV_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace easyinv {

#ifdef EASYINV_CUDA

namespace {

// The TorchScript executor profiles and optimises a graph during its first runs, and cuDNN's benchmark mode tries
// its algorithms in the first one: none of that may happen inside a capture.
constexpr int kWarmUpForwards = 3;

std::string Signature(const std::vector<at::Tensor>& inputs) {
  std::ostringstream key;
  for (const auto& input : inputs) key << input.scalar_type() << input.sizes() << input.strides() << ';';
  return key.str();
}

// Work queued on `waiting` from now on starts after what is queued on `queued` now.
void Order(const c10::cuda::CUDAStream& queued, const c10::cuda::CUDAStream& waiting) {
  at::cuda::CUDAEvent event;
  event.record(queued);
  event.block(waiting);
}

}  // namespace

class CudaGraphs {
 public:
  ~CudaGraphs() {
    if (stream_) stream_->synchronize();  // replays may still run; their graphs and memory go with this object
  }

  at::Tensor Replay(torch::jit::Module& module, const std::vector<at::Tensor>& inputs) {
    Captured& captured = graphs_[Signature(inputs)];
    if (!captured.graph) Capture(module, inputs, captured);
    for (size_t i = 0; i < inputs.size(); ++i) captured.inputs[i].copy_(inputs[i]);
    captured.graph->replay();
    return captured.output;
  }

 private:
  struct Captured {
    std::unique_ptr<at::cuda::CUDAGraph> graph;
    std::vector<at::Tensor> inputs;  // static: each replay reads them
    at::Tensor output;               // static: each replay overwrites it
  };

  // Captured on a side stream, as PyTorch does: the device thread's stream may get copies queued from the JS
  // thread, and ThreadLocal mode keeps other threads' CUDA calls legal during the capture.
  void Capture(torch::jit::Module& module, const std::vector<at::Tensor>& inputs, Captured& captured) {
    const c10::cuda::CUDAStream queue_stream = c10::cuda::getCurrentCUDAStream();
    if (!stream_) stream_ = queue_stream;
    if (!pool_) pool_ = at::cuda::graph_pool_handle();  // one pool for all shapes: replays never overlap
    std::vector<at::Tensor> statics;
    for (const auto& input : inputs) statics.push_back(input.clone());  // keeps channels_last strides
    const std::vector<c10::IValue> arguments(statics.begin(), statics.end());
    const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(false, queue_stream.device_index());
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    at::Tensor output;
    Order(queue_stream, side);
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      for (int i = 0; i < kWarmUpForwards; ++i) module.forward(arguments);
      graph->capture_begin(*pool_, cudaStreamCaptureModeThreadLocal);
      try {
        const c10::IValue result = module.forward(arguments);
        TORCH_CHECK(result.isTensor(), "the module returned a ", result.tagKind(), ", not one tensor");
        output = result.toTensor();
        graph->capture_end();
      } catch (const std::exception& e) {
        try {
          graph->capture_end();  // leaves capture mode, so that the stream stays usable
        } catch (const std::exception&) {
        }
        TORCH_CHECK(false, "capturing the forward as a CUDA graph failed (load the module without cudaGraphs to run it "
                    "eagerly): ", e.what());
      }
    }
    Order(side, queue_stream);
    captured = Captured{std::move(graph), std::move(statics), output};
  }

  std::map<std::string, Captured> graphs_;
  std::optional<c10::cuda::CUDAStream> stream_;
  std::optional<decltype(at::cuda::graph_pool_handle())> pool_;
};

#else

class CudaGraphs {
 public:
  at::Tensor Replay(torch::jit::Module&, const std::vector<at::Tensor>&) {
    TORCH_CHECK(false, "CUDA graphs need a CUDA build of easyinv");
  }
};

#endif

std::shared_ptr<CudaGraphs> MakeCudaGraphs() { return std::make_shared<CudaGraphs>(); }

at::Tensor ReplayForward(CudaGraphs& graphs, torch::jit::Module& module, const std::vector<at::Tensor>& inputs) {
  return graphs.Replay(module, inputs);
}

}  // namespace easyinv
