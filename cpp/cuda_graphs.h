// A network's forward (TorchScript or compiled) captured as CUDA graphs, one per input signature, then replayed. At batch 1 an eager UNet
// forward is bound by the CPU launching its hundreds of kernels one by one; a replay launches them all at once.
#pragma once

#include <torch/script.h>

#include "network.h"

#include <memory>
#include <vector>

namespace easyinv {

class CudaGraphs;

// An empty set of graphs for one module; they are captured on first use and freed with it.
std::shared_ptr<CudaGraphs> MakeCudaGraphs();

// The module's output (one tensor) for `inputs`, from the graph captured for their shapes, dtypes and strides. It is
// the graph's static output, overwritten by the next replay: use it before that. Device thread only.
at::Tensor ReplayForward(CudaGraphs& graphs, Network& network, const std::vector<at::Tensor>& inputs);

}  // namespace easyinv
