// What a Module runs: a TorchScript module, or an AOTInductor package (.pt2: Inductor's fused kernels compiled ahead
// of time, with the weights), behind one call.
#pragma once

#include <torch/script.h>

#include <memory>
#include <string>
#include <vector>

namespace easyinv {

class Network {
 public:
  virtual ~Network() = default;
  // The forward on `inputs` (on the network's device), queued on the calling thread's current stream: one tensor, or
  // a tuple of them.
  virtual c10::IValue Run(const std::vector<at::Tensor>& inputs) = 0;
};

// NHWC order for what has image axes (4-D parameters, buffers and inputs), as oneDNN and cuDNN prefer. Values are
// unchanged; only strides.
inline at::Tensor ChannelsLastIfImage(const at::Tensor& tensor) {
  return tensor.dim() == 4 ? tensor.contiguous(at::MemoryFormat::ChannelsLast) : tensor;
}

// Whether this build can load .pt2 packages (LibTorch >= 2.6 has AOTInductor's loader).
bool CompiledPackagesSupported();

// The network in `path`: a .pt2 package by its extension, else a TorchScript file, whose floating parameters and
// buffers are converted to `dtype` (and its 4-D ones to NHWC order with `channels_last`). A package runs the dtype and
// memory format it was compiled for.
std::shared_ptr<Network> LoadNetwork(const std::string& path, const c10::Device& device, c10::ScalarType dtype,
                                     bool channels_last);

}  // namespace easyinv
