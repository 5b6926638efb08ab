#include "tensor.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/StreamGuard.h>

#include <cstring>

#include "convert.h"
#include "addon.h"
#include "queue.h"

namespace easyinv {
namespace {

Napi::Value TensorValue(Napi::Env env, const at::Tensor& tensor) { return TensorWrap::Wrap(env, tensor); }

Napi::Value TensorArray(Napi::Env env, const std::vector<at::Tensor>& tensors) {
  auto array = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) array.Set(static_cast<uint32_t>(i), TensorWrap::Wrap(env, tensors[i]));
  return array;
}

Napi::Value NumberValue(Napi::Env env, double value) { return Napi::Number::New(env, value); }

// A host copy in the element type JS has an array for (float16 and bfloat16 widen to float32, bool to uint8).
// `tensor` on `device` in `dtype`. A copy onto a CUDA device is queued on that device thread's stream, from any
// thread, so that it stays in order with the device's jobs (the destination's current stream on another thread is
// its default stream, which our streams do not wait for). An upload goes from pinned memory: it queues behind the
// device's work instead of waiting for it.
at::Tensor Placed(const at::Tensor& tensor, const c10::Device& device, at::ScalarType dtype) {
  if (device.is_cuda() && tensor.device() != device) {
    c10::StreamGuard on_device_stream(*DeviceStream(device));
    if (tensor.device().is_cpu()) return tensor.to(dtype).pin_memory().to(device, dtype, /*non_blocking=*/true);
    return tensor.to(device, dtype);
  }
  return tensor.to(device, dtype);
}

at::Tensor HostCopy(const at::Tensor& tensor) {
  at::ScalarType type = tensor.scalar_type();
  if (type == at::kHalf || type == at::kBFloat16) type = at::kFloat;
  if (type == at::kBool) type = at::kByte;
  return tensor.to(at::kCPU, type).contiguous();
}

Napi::Value TypedArrayOf(Napi::Env env, const at::Tensor& host) {
  size_t count = static_cast<size_t>(host.numel());
  auto buffer = Napi::ArrayBuffer::New(env, host.nbytes());  // JS-owned memory: no external buffers
  if (host.nbytes() > 0) std::memcpy(buffer.Data(), host.data_ptr(), host.nbytes());
  switch (host.scalar_type()) {
    case at::kFloat: return Napi::Float32Array::New(env, count, buffer, 0);
    case at::kDouble: return Napi::Float64Array::New(env, count, buffer, 0);
    case at::kInt: return Napi::Int32Array::New(env, count, buffer, 0);
    case at::kLong: return Napi::TypedArrayOf<int64_t>::New(env, count, buffer, 0, napi_bigint64_array);
    case at::kByte: return Napi::Uint8Array::New(env, count, buffer, 0);
    default: throw Napi::Error::New(env, "easyinv: no JS array type for dtype " + DtypeName(host.scalar_type()));
  }
}

std::vector<at::Tensor> TensorListArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (!info[index].IsArray() || info[index].As<Napi::Array>().Length() == 0) {
    ThrowType(env, std::string(name) + " must be a non-empty array of Tensors");
  }
  auto array = info[index].As<Napi::Array>();
  std::vector<at::Tensor> tensors;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    tensors.push_back(TensorWrap::Extract(env, array.Get(i), std::string(name) + "[" + std::to_string(i) + "]"));
  }
  return tensors;
}

// Copies JS data into a new CPU tensor of the data's own element type.
at::Tensor TensorFromData(Napi::Env env, const Napi::Value& data, const std::vector<int64_t>& shape) {
  const char* accepted =
      "data must be a Float32Array, Float64Array, Int32Array, BigInt64Array, Uint8Array or an array of numbers";
  int64_t needed = c10::multiply_integers(shape);
  auto check_count = [&](size_t count) {
    if (static_cast<int64_t>(count) != needed) {
      throw Napi::RangeError::New(env, "easyinv: data has " + std::to_string(count) + " elements but shape " +
                                           ShapeText(shape) + " needs " + std::to_string(needed));
    }
  };
  if (data.IsTypedArray()) {
    auto typed = data.As<Napi::TypedArray>();
    at::ScalarType type;
    switch (typed.TypedArrayType()) {
      case napi_float32_array: type = at::kFloat; break;
      case napi_float64_array: type = at::kDouble; break;
      case napi_int32_array: type = at::kInt; break;
      case napi_bigint64_array: type = at::kLong; break;
      case napi_uint8_array: type = at::kByte; break;
      default: ThrowType(env, accepted);
    }
    check_count(typed.ElementLength());
    at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(type));
    const auto* bytes = static_cast<const uint8_t*>(typed.ArrayBuffer().Data()) + typed.ByteOffset();
    if (tensor.nbytes() > 0) std::memcpy(tensor.data_ptr(), bytes, tensor.nbytes());
    return tensor;
  }
  if (!data.IsArray()) ThrowType(env, accepted);
  auto array = data.As<Napi::Array>();
  check_count(array.Length());
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  double* out = tensor.data_ptr<double>();
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    if (!item.IsNumber()) ThrowType(env, std::string(accepted) + " (element " + std::to_string(i) + " is not a number)");
    out[i] = item.As<Napi::Number>().DoubleValue();
  }
  return tensor;
}

}  // namespace

at::Tensor WeightedSum(const std::vector<at::Tensor>& tensors, const std::vector<double>& weights) {
  for (size_t i = 1; i < tensors.size(); ++i) {  // add_ would broadcast [1, 3] into [2, 3] without a word
    TORCH_CHECK(tensors[i].sizes() == tensors[0].sizes(), "the tensors must have one size: tensors[", i, "] has size ",
                ShapeText(tensors[i].sizes()), ", tensors[0] ", ShapeText(tensors[0].sizes()));
  }
  at::ScalarType type = tensors[0].scalar_type();
  for (const auto& tensor : tensors) type = at::promote_types(type, tensor.scalar_type());
  at::Tensor sum = tensors[0].to(type) * weights[0];
  for (size_t i = 1; i < tensors.size(); ++i) sum.add_(tensors[i], weights[i]);
  return sum;
}

Napi::Function TensorWrap::Define(Napi::Env env) {
  return DefineClass(env, "Tensor",
                     {
                         StaticMethod<&TensorWrap::FromArray>("fromArray"),
                         StaticMethod<&TensorWrap::Randn>("randn"),
                         StaticMethod<&TensorWrap::WeightedSum>("weightedSum"),
                         StaticMethod<&TensorWrap::Cat>("cat"),
                         InstanceAccessor<&TensorWrap::Shape>("shape"),
                         InstanceAccessor<&TensorWrap::Dtype>("dtype"),
                         InstanceAccessor<&TensorWrap::Device>("device"),
                         InstanceAccessor<&TensorWrap::Disposed>("disposed"),
                         InstanceMethod<&TensorWrap::Dispose>("dispose"),
                         InstanceMethod<&TensorWrap::ToArray>("toArray"),
                         InstanceMethod<&TensorWrap::To>("to"),
                         InstanceMethod<&TensorWrap::Lerp>("lerp"),
                         InstanceMethod<&TensorWrap::Affine>("affine"),
                         InstanceMethod<&TensorWrap::Clamp>("clamp"),
                         InstanceMethod<&TensorWrap::Split>("split"),
                         InstanceMethod<&TensorWrap::Mean>("mean"),
                         InstanceMethod<&TensorWrap::Std>("std"),
                         InstanceMethod<&TensorWrap::Norm>("norm"),
                     });
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    ThrowType(info.Env(), "Tensor cannot be constructed directly: use Tensor.fromArray or Tensor.randn");
  }
  tensor_ = *info[0].As<Napi::External<at::Tensor>>().Data();
  ++AddonOf(info.Env()).live_tensors;
  external_bytes_ = static_cast<int64_t>(tensor_.nbytes());
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
}

TensorWrap::~TensorWrap() { Release(Env()); }

void TensorWrap::Release(Napi::Env env) {
  if (!tensor_.defined()) return;
  tensor_.reset();
  --AddonOf(env).live_tensors;
  Napi::MemoryManagement::AdjustExternalMemory(env, -external_bytes_);
}

Napi::Object TensorWrap::Wrap(Napi::Env env, at::Tensor tensor) {
  return AddonOf(env).tensor_class.New({Napi::External<at::Tensor>::New(env, &tensor)});
}

at::Tensor TensorWrap::Extract(Napi::Env env, const Napi::Value& value, const std::string& what) {
  const auto& tensor_class = AddonOf(env).tensor_class;
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(tensor_class.Value())) {
    ThrowType(env, what + " must be a Tensor");
  }
  return Unwrap(value.As<Napi::Object>())->Live(env);
}

const at::Tensor& TensorWrap::Live(Napi::Env env) const {
  if (!tensor_.defined()) throw Napi::Error::New(env, "easyinv: this Tensor has been disposed");
  return tensor_;
}

Napi::Value TensorWrap::FromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = ShapeArg(info, 1, "shape");
  at::Tensor host = TensorFromData(env, info[0], shape);
  c10::Device device(c10::kCPU);
  c10::ScalarType dtype = info[0].IsTypedArray() ? host.scalar_type() : at::kFloat;
  DeviceDtypeArg(info, 2, device, dtype);
  try {
    return Wrap(env, Placed(host, device, dtype));
  } catch (const c10::Error& e) {
    throw Napi::Error::New(env, std::string("easyinv: Tensor.fromArray failed: ") + e.what_without_backtrace());
  }
}

Napi::Value TensorWrap::Randn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<int64_t> shape = ShapeArg(info, 0, "shape");
  if (!info[1].IsObject() || !info[1].As<Napi::Object>().Get("seed").IsNumber()) {
    ThrowType(env, "Tensor.randn needs options with a numeric seed, e.g. { seed: 0, device: 'cpu' }");
  }
  const int64_t seed = IntegerValue(env, info[1].As<Napi::Object>().Get("seed"), "seed", 0, kMaxSafeInteger);
  c10::Device device(c10::kCPU);
  c10::ScalarType dtype = at::kFloat;
  DeviceDtypeArg(info, 1, device, dtype);
  // Drawn on the CPU so that one seed gives the same noise on every device.
  auto work = [shape, seed, device, dtype] {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed));
    return Placed(at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat)), device, dtype);
  };
  return Schedule(env, device, "Tensor.randn", work, TensorValue);
}

Napi::Value TensorWrap::WeightedSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<at::Tensor> tensors = TensorListArg(info, 0, "tensors");
  if (!info[1].IsArray() || info[1].As<Napi::Array>().Length() != tensors.size()) {
    ThrowType(env, "weights must be an array of numbers, one per tensor");
  }
  auto array = info[1].As<Napi::Array>();
  std::vector<double> weights;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    if (!array.Get(i).IsNumber()) ThrowType(env, "weights must be an array of numbers, one per tensor");
    weights.push_back(array.Get(i).As<Napi::Number>().DoubleValue());
  }
  auto work = [tensors, weights] { return easyinv::WeightedSum(tensors, weights); };
  return Schedule(env, tensors[0].device(), "Tensor.weightedSum", work, TensorValue);
}

Napi::Value TensorWrap::Cat(const Napi::CallbackInfo& info) {
  std::vector<at::Tensor> tensors = TensorListArg(info, 0, "tensors");
  int64_t dim = info[1].IsUndefined() ? 0 : IntegerValue(info.Env(), info[1], "dim", -kMaxDims, kMaxDims - 1);
  return Schedule(info.Env(), tensors[0].device(), "Tensor.cat", [tensors, dim] { return at::cat(tensors, dim); },
                  TensorValue);
}

Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) {
  auto sizes = Live(info.Env()).sizes();
  auto array = Napi::Array::New(info.Env(), sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) array.Set(static_cast<uint32_t>(i), static_cast<double>(sizes[i]));
  return array;
}

Napi::Value TensorWrap::Dtype(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DtypeName(Live(info.Env()).scalar_type()));
}

Napi::Value TensorWrap::Device(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DeviceName(Live(info.Env()).device()));
}

Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !tensor_.defined());
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  Release(info.Env());  // work already queued holds its own reference and frees the memory when it ends
  return info.Env().Undefined();
}

Napi::Value TensorWrap::ToArray(const Napi::CallbackInfo& info) {
  at::Tensor tensor = Live(info.Env());
  return Schedule(info.Env(), tensor.device(), "Tensor.toArray", [tensor] { return HostCopy(tensor); }, TypedArrayOf);
}

Napi::Value TensorWrap::To(const Napi::CallbackInfo& info) {
  at::Tensor tensor = Live(info.Env());
  c10::Device device = tensor.device();
  c10::ScalarType dtype = tensor.scalar_type();
  DeviceDtypeArg(info, 0, device, dtype);
  return Schedule(info.Env(), tensor.device(), "Tensor.to", [tensor, device, dtype] { return Placed(tensor, device, dtype); },
                  TensorValue);
}

Napi::Value TensorWrap::Lerp(const Napi::CallbackInfo& info) {
  at::Tensor start = Live(info.Env());
  at::Tensor end = Extract(info.Env(), info[0], "end");
  double weight = NumberArg(info, 1, "weight");
  return Schedule(info.Env(), start.device(), "Tensor.lerp",
                  [start, end, weight] { return at::lerp(start, end, weight); }, TensorValue);
}

Napi::Value TensorWrap::Affine(const Napi::CallbackInfo& info) {
  at::Tensor tensor = Live(info.Env());
  double scale = NumberArg(info, 0, "scale"), shift = NumberArg(info, 1, "shift");
  return Schedule(info.Env(), tensor.device(), "Tensor.affine",
                  [tensor, scale, shift] { return tensor * scale + shift; }, TensorValue);
}

Napi::Value TensorWrap::Clamp(const Napi::CallbackInfo& info) {
  at::Tensor tensor = Live(info.Env());
  double min = NumberArg(info, 0, "min"), max = NumberArg(info, 1, "max");
  return Schedule(info.Env(), tensor.device(), "Tensor.clamp",
                  [tensor, min, max] { return at::clamp(tensor, min, max); }, TensorValue);
}

Napi::Value TensorWrap::Split(const Napi::CallbackInfo& info) {
  at::Tensor tensor = Live(info.Env());
  std::vector<int64_t> sizes = ShapeArg(info, 0, "sizes");
  return Schedule(info.Env(), tensor.device(), "Tensor.split",
                  [tensor, sizes] { return at::split_with_sizes(tensor, sizes, 0); }, TensorArray);
}

template <typename Reduce>
Napi::Value TensorWrap::Statistic(const Napi::CallbackInfo& info, const char* name, Reduce reduce) {
  at::Tensor tensor = Live(info.Env());
  return Schedule(info.Env(), tensor.device(), name,
                  [tensor, reduce] { return reduce(tensor.to(at::kDouble)).template item<double>(); }, NumberValue);
}

Napi::Value TensorWrap::Mean(const Napi::CallbackInfo& info) {
  return Statistic(info, "Tensor.mean", [](const at::Tensor& t) { return t.mean(); });
}

Napi::Value TensorWrap::Std(const Napi::CallbackInfo& info) {
  return Statistic(info, "Tensor.std", [](const at::Tensor& t) { return t.std(); });
}

Napi::Value TensorWrap::Norm(const Napi::CallbackInfo& info) {
  return Statistic(info, "Tensor.norm", [](const at::Tensor& t) { return t.norm(); });
}

}  // namespace easyinv
