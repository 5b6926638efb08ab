// Tensor: a JS handle to a LibTorch tensor that stays on its device. Everything that reads or computes tensor
// data is queued on the device's thread; the handle only answers metadata synchronously.
#pragma once

#include <napi.h>
#include <torch/script.h>

namespace easyinv {

// sum_i weights[i] tensors[i], in the widest of their dtypes; the tensors must have one shape.
at::Tensor WeightedSum(const std::vector<at::Tensor>& tensors, const std::vector<double>& weights);

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, at::Tensor tensor);
  // The tensor behind a JS value; throws a JS error naming `what` when it is not a live Tensor.
  static at::Tensor Extract(Napi::Env env, const Napi::Value& value, const std::string& what);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

 private:
  static Napi::Value FromArray(const Napi::CallbackInfo& info);
  static Napi::Value Randn(const Napi::CallbackInfo& info);
  static Napi::Value WeightedSum(const Napi::CallbackInfo& info);
  static Napi::Value Cat(const Napi::CallbackInfo& info);

  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Device(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ToArray(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Lerp(const Napi::CallbackInfo& info);
  Napi::Value Affine(const Napi::CallbackInfo& info);
  Napi::Value Clamp(const Napi::CallbackInfo& info);
  Napi::Value Split(const Napi::CallbackInfo& info);
  Napi::Value Mean(const Napi::CallbackInfo& info);
  Napi::Value Std(const Napi::CallbackInfo& info);
  Napi::Value Norm(const Napi::CallbackInfo& info);

  const at::Tensor& Live(Napi::Env env) const;
  void Release(Napi::Env env);
  template <typename Reduce>
  Napi::Value Statistic(const Napi::CallbackInfo& info, const char* name, Reduce reduce);

  at::Tensor tensor_;
  // The tensor's bytes, reported to V8 while the handle lives, so that garbage collection weighs an undisposed
  // tensor by its memory (host or device), not by the few bytes of its JS object.
  int64_t external_bytes_ = 0;
};

}  // namespace easyinv
