#include "cuda_graphs.h"

#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#ifdef EASYINV_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime_api.h>
#endif

namespace easyinv {

#ifdef EASYINV_CUDA

namespace {

// The TorchScript executor profiles and optimises a graph during its first runs, and cuDNN's benchmark mode tries
// its algorithms in the first one: none of that may happen inside a capture.
constexpr int kWarmUpForwards = 3;

std::string Signature(const std::vector<at::Tensor>& inputs) {
  std::ostringstream key;
  for (const auto& input : inputs) {
    key << input.device() << input.scalar_type() << input.sizes() << input.strides() << ';';
  }
  return key.str();
}

// Work queued on `waiting` from now on starts after what is queued on `queued` now.
void Order(const c10::cuda::CUDAStream& queued, const c10::cuda::CUDAStream& waiting) {
  at::cuda::CUDAEvent event;
  event.record(queued);
  event.block(waiting);
}

// The stream captures run on, one per device for the process: made by us, so never one of LibTorch's pooled streams,
// which the device thread's stream or another library's work could be (an upload queued there from another thread
// during a capture would be recorded into the graph instead of run). One stream for every capture also lets the
// graphs of one module share their memory pool: the caching allocator reuses a block only on the stream it was
// allocated on.
c10::cuda::CUDAStream CaptureStream(c10::DeviceIndex device) {
  static std::mutex mutex;
  static std::map<c10::DeviceIndex, cudaStream_t> streams;
  std::lock_guard<std::mutex> lock(mutex);
  cudaStream_t& stream = streams[device];
  if (stream == nullptr) {
    c10::cuda::CUDAGuard on_device(device);
    C10_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  return c10::cuda::getStreamFromExternal(stream, device);
}

// After a failed capture the stream may still be capturing (PyTorch's capture_end threw before ending it): end it,
// so that the stream and the device stay usable, and clear the error it left.
void LeaveCapture(const c10::cuda::CUDAStream& stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
    cudaGraph_t abandoned = nullptr;
    if (cudaStreamEndCapture(stream.stream(), &abandoned) == cudaSuccess && abandoned != nullptr) {
      cudaGraphDestroy(abandoned);
    }
  }
  (void)cudaGetLastError();
}

}  // namespace

class CudaGraphs {
 public:
  // Never throws: a sticky CUDA error would make synchronize() throw, and a destructor that throws terminates.
  ~CudaGraphs() {
    if (stream_) (void)cudaStreamSynchronize(stream_->stream());  // replays may still run on the graphs freed here
  }

  at::Tensor Replay(Network& network, const std::vector<at::Tensor>& inputs) {
    const std::string signature = Signature(inputs);
    // A capture that failed fails again the same way: no retry, no warm-up forwards on every later step.
    if (const auto failed = failures_.find(signature); failed != failures_.end()) TORCH_CHECK(false, failed->second);
    Captured& captured = graphs_[signature];
    if (!captured.graph) {
      try {
        Capture(network, inputs, captured);
      } catch (const c10::Error& e) {
        Forget(signature, e.what_without_backtrace());
        throw;
      } catch (const std::exception& e) {
        Forget(signature, e.what());
        throw;
      }
    }
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

  void Forget(const std::string& signature, std::string why) {
    graphs_.erase(signature);
    failures_[signature] = std::move(why);
  }

  // Captured on a side stream, as PyTorch does; ThreadLocal mode keeps other threads' CUDA calls legal meanwhile.
  void Capture(Network& network, const std::vector<at::Tensor>& inputs, Captured& captured) {
    const c10::cuda::CUDAStream queue_stream = c10::cuda::getCurrentCUDAStream();
    const c10::cuda::CUDAStream side = CaptureStream(queue_stream.device_index());
    TORCH_CHECK(side != queue_stream, "the capture stream is the device thread's stream");
    if (!stream_) stream_ = queue_stream;
    if (!pool_) pool_ = at::cuda::graph_pool_handle();  // one pool for all shapes: replays never overlap
    std::vector<at::Tensor> statics;
    for (const auto& input : inputs) statics.push_back(input.clone());  // keeps channels_last strides
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    at::Tensor output;
    Order(queue_stream, side);
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      for (int i = 0; i < kWarmUpForwards; ++i) network.Run(statics);
      graph->capture_begin(*pool_, cudaStreamCaptureModeThreadLocal);
      try {
        const c10::IValue result = network.Run(statics);
        TORCH_CHECK(result.isTensor(), "the module returned a ", result.tagKind(), ", not one tensor");
        output = result.toTensor();
        graph->capture_end();
      } catch (const std::exception& e) {
        try {
          graph->capture_end();  // ends the allocator's routing to the pool, then the stream's capture
        } catch (const std::exception&) {
        }
        LeaveCapture(side);
        Order(side, queue_stream);
        TORCH_CHECK(false, "capturing the forward as a CUDA graph failed (load the module without cudaGraphs to run it "
                    "eagerly): ", e.what());
      }
    }
    Order(side, queue_stream);
    captured = Captured{std::move(graph), std::move(statics), output};
  }

  std::map<std::string, Captured> graphs_;
  std::map<std::string, std::string> failures_;  // signature -> why its capture failed
  std::optional<c10::cuda::CUDAStream> stream_;
  std::optional<decltype(at::cuda::graph_pool_handle())> pool_;
};

#else

class CudaGraphs {
 public:
  at::Tensor Replay(Network&, const std::vector<at::Tensor>&) {
    TORCH_CHECK(false, "CUDA graphs need a CUDA build of easyinv");
  }
};

#endif

std::shared_ptr<CudaGraphs> MakeCudaGraphs() { return std::make_shared<CudaGraphs>(); }

at::Tensor ReplayForward(CudaGraphs& graphs, Network& network, const std::vector<at::Tensor>& inputs) {
  return graphs.Replay(network, inputs);
}

}  // namespace easyinv
