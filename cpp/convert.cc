#include "convert.h"

#include <torch/cuda.h>

#include <cmath>
#include <optional>

namespace easyinv {
namespace {

struct DtypeEntry {
  const char* name;
  c10::ScalarType type;
};

const DtypeEntry kDtypes[] = {
    {"float32", c10::kFloat}, {"float16", c10::kHalf},  {"bfloat16", c10::kBFloat16}, {"float64", c10::kDouble},
    {"int64", c10::kLong},    {"int32", c10::kInt},     {"uint8", c10::kByte},        {"bool", c10::kBool},
};

std::string Describe(const Napi::Value& value) {
  if (value.IsString()) return "'" + value.As<Napi::String>().Utf8Value() + "'";
  if (value.IsNull()) return "null";
  if (value.IsUndefined()) return "undefined";
  return "of type " + std::string(value.IsNumber() ? "number" : value.IsObject() ? "object" : "other");
}

}  // namespace

std::string ShapeText(c10::IntArrayRef shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

void ThrowType(Napi::Env env, const std::string& message) {
  throw Napi::TypeError::New(env, "easyinv: " + message);
}

c10::Device ParseDevice(Napi::Env env, const Napi::Value& value) {
  if (!value.IsString()) ThrowType(env, "device must be a string such as 'cpu', 'cuda' or 'cuda:0'");
  std::string name = value.As<Napi::String>().Utf8Value();
  std::optional<c10::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
  }
  if (!device || !(device->is_cpu() || device->is_cuda())) {
    throw Napi::Error::New(env, "easyinv: unknown device '" + name + "': use 'cpu', 'cuda' or 'cuda:<index>'");
  }
  if (device->is_cpu()) return c10::Device(c10::kCPU);
  if (!torch::cuda::is_available()) {
#ifdef EASYINV_CUDA
    const char* why = "this build links a CUDA LibTorch, but no CUDA device or driver is visible";
#else
    // The facts only: how to rebuild is the loader's and the README's to say (binding/index.js).
    const char* why = "this build links a CPU-only LibTorch (capabilities().cudaBuild is false)";
#endif
    throw Napi::Error::New(env, "easyinv: device '" + name + "' requested but CUDA is not available: " + why);
  }
  int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  c10::DeviceIndex index = device->has_index() ? device->index() : 0;
  if (index >= count) {
    throw Napi::Error::New(env, "easyinv: device '" + name + "' does not exist: " + std::to_string(count) +
                                    " CUDA device(s) are visible");
  }
  return c10::Device(c10::kCUDA, index);
}

std::string DeviceName(const c10::Device& device) { return device.str(); }

c10::ScalarType ParseDtype(Napi::Env env, const Napi::Value& value) {
  if (value.IsString()) {
    std::string name = value.As<Napi::String>().Utf8Value();
    for (const auto& entry : kDtypes) {
      if (name == entry.name) return entry.type;
    }
  }
  std::string known;
  for (const auto& entry : kDtypes) known += std::string(known.empty() ? "" : ", ") + entry.name;
  ThrowType(env, "unknown dtype " + Describe(value) + ": use one of " + known);
}

std::string DtypeName(c10::ScalarType dtype) {
  for (const auto& entry : kDtypes) {
    if (entry.type == dtype) return entry.name;
  }
  return c10::toString(dtype);
}

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (!info[index].IsString()) ThrowType(info.Env(), std::string(name) + " must be a string");
  return info[index].As<Napi::String>().Utf8Value();
}

double NumberArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (!info[index].IsNumber()) ThrowType(info.Env(), std::string(name) + " must be a number");
  return info[index].As<Napi::Number>().DoubleValue();
}

int64_t IntegerValue(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t min, int64_t max) {
  if (!value.IsNumber()) ThrowType(env, name + " must be a number");
  const double number = value.As<Napi::Number>().DoubleValue();
  const double safe = 0x1p53;
  if (!(std::abs(number) < safe && number == std::floor(number) && number >= static_cast<double>(min) &&
        number <= static_cast<double>(max))) {
    throw Napi::RangeError::New(env, "easyinv: " + name + " must be an integer from " + std::to_string(min) + " to " +
                                         std::to_string(max) + ", not " + value.ToString().Utf8Value());
  }
  return static_cast<int64_t>(number);
}

std::vector<int64_t> ShapeArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  const char* rule = " must be an array of non-negative integers";
  if (!info[index].IsArray()) ThrowType(info.Env(), std::string(name) + rule);
  auto array = info[index].As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value item = array.Get(i);
    double size = item.IsNumber() ? item.As<Napi::Number>().DoubleValue() : -1;
    if (!(size >= 0 && size < 0x1p63) || size != static_cast<double>(static_cast<int64_t>(size))) {
      ThrowType(info.Env(), std::string(name) + rule);
    }
    shape.push_back(static_cast<int64_t>(size));
  }
  // Sizes whose product overflows int64 would pass the element count check of the data (the product wraps) and
  // then make LibTorch throw from a place no JS caller can catch.
  int64_t elements = 1;
  for (int64_t size : shape) {
    if (size != 0 && __builtin_mul_overflow(elements, size, &elements)) {
      throw Napi::RangeError::New(info.Env(), std::string("easyinv: ") + name + " " + ShapeText(shape) +
                                                  " has more elements than a tensor can hold (2^63)");
    }
  }
  return shape;
}

void DeviceDtypeArg(const Napi::CallbackInfo& info, size_t index, c10::Device& device, c10::ScalarType& dtype) {
  Napi::Value options = info[index];
  if (options.IsUndefined()) return;
  if (!options.IsObject()) ThrowType(info.Env(), "options must be an object such as { device: 'cpu', dtype: 'float32' }");
  Napi::Object object = options.As<Napi::Object>();
  if (!object.Get("device").IsUndefined()) device = ParseDevice(info.Env(), object.Get("device"));
  if (!object.Get("dtype").IsUndefined()) dtype = ParseDtype(info.Env(), object.Get("dtype"));
}

}  // namespace easyinv
