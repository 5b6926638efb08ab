// Module: a TorchScript module or a compiled .pt2 package on one device in one dtype; forward runs on that device's
// thread.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <memory>

#include "cuda_graphs.h"
#include "network.h"

namespace easyinv {

class ModuleWrap : public Napi::ObjectWrap<ModuleWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Value Load(const Napi::CallbackInfo& info);

  explicit ModuleWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Denoise(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Path(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value ChannelsLast(const Napi::CallbackInfo& info);
  Napi::Value CudaGraphsEnabled(const Napi::CallbackInfo& info);

  std::shared_ptr<Network> network_;  // null once disposed; queued forwards hold their own reference
  std::string path_;
  c10::Device device_{c10::kCPU};
  c10::ScalarType dtype_ = c10::kFloat;
  bool channels_last_ = false;  // 4-D weights and image inputs in NHWC order, as oneDNN and cuDNN prefer
  std::shared_ptr<CudaGraphs> graphs_;  // set when loaded with cudaGraphs: denoise replays captured forwards
};

}  // namespace easyinv
