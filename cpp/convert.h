// Names of devices and dtypes as JS sees them, and argument checks that throw JS errors.
#pragma once

#include <napi.h>
#include <torch/script.h>

#include <string>
#include <vector>

namespace easyinv {

c10::Device ParseDevice(Napi::Env env, const Napi::Value& value);
std::string DeviceName(const c10::Device& device);
c10::ScalarType ParseDtype(Napi::Env env, const Napi::Value& value);
std::string DtypeName(c10::ScalarType dtype);
std::string ShapeText(c10::IntArrayRef shape);

[[noreturn]] void ThrowType(Napi::Env env, const std::string& message);
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
double NumberArg(const Napi::CallbackInfo& info, size_t index, const char* name);
constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;  // JS's Number.MAX_SAFE_INTEGER
constexpr int64_t kMaxDims = 64;                                // more than any tensor here has

// A safe integer (|n| < 2^53) in [min, max]; casting NaN, an infinity or an out-of-range double is undefined in C++.
int64_t IntegerValue(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t min, int64_t max);
std::vector<int64_t> ShapeArg(const Napi::CallbackInfo& info, size_t index, const char* name);
// The options object at `index` ({device, dtype}); missing fields keep the defaults passed in.
void DeviceDtypeArg(const Napi::CallbackInfo& info, size_t index, c10::Device& device, c10::ScalarType& dtype);

}  // namespace easyinv
