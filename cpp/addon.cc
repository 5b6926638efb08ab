// The addon's entry: the per-environment state (addon.h) made and torn down, and the process-level calls.
#include <ATen/Parallel.h>
#include <napi.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>

#if defined(__GLIBC__)
#include <malloc.h>

#include <limits>
#endif

#ifdef EASYINV_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "addon.h"
#include "convert.h"
#include "metrics.h"
#include "module.h"
#include "network.h"
#include "nvrtc.h"
#include "queue.h"
#include "regularize.h"
#include "tensor.h"

namespace easyinv {
namespace {

const c10::ScalarType kProbedDtypes[] = {c10::kFloat, c10::kHalf, c10::kBFloat16, c10::kDouble};

// A dtype "runs" on a device when a small convolution, the core of every diffusion module, works there.
bool ConvolutionRuns(const c10::Device& device, c10::ScalarType dtype) {
  try {
    auto options = at::TensorOptions().device(device).dtype(dtype);
    at::conv2d(at::ones({1, 1, 4, 4}, options), at::ones({1, 1, 3, 3}, options));
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

struct DeviceInfo {
  std::string name;
  std::string label;
  int64_t memory_bytes = 0;
  std::vector<std::string> dtypes;
};

struct Probe {
  int threads;  // intra-op threads of the device threads, where the work runs
  std::vector<DeviceInfo> devices;
};

Probe ProbeDevices() {
  std::vector<c10::Device> devices = {c10::Device(c10::kCPU)};
  if (torch::cuda::is_available()) {
    const auto count = static_cast<c10::DeviceIndex>(torch::cuda::device_count());
    for (c10::DeviceIndex i = 0; i < count; ++i) {
      devices.emplace_back(c10::kCUDA, i);
    }
  }
  std::vector<DeviceInfo> infos;
  for (const auto& device : devices) {
    DeviceInfo info{DeviceName(device), device.is_cpu() ? "CPU" : "CUDA device"};
#ifdef EASYINV_CUDA
    if (device.is_cuda()) {
      const auto* properties = at::cuda::getDeviceProperties(device.index());
      info.label = properties->name;
      info.memory_bytes = static_cast<int64_t>(properties->totalGlobalMem);
    }
#endif
    for (auto dtype : kProbedDtypes) {
      if (ConvolutionRuns(device, dtype)) info.dtypes.push_back(DtypeName(dtype));
    }
    infos.push_back(info);
  }
  return Probe{at::get_num_threads(), infos};
}

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  auto deliver = [](Napi::Env env, const Probe& probe) -> Napi::Value {
    const auto& devices = probe.devices;
    auto result = Napi::Object::New(env);
    result.Set("libtorch", TORCH_VERSION);
    result.Set("cuda", torch::cuda::is_available());
    result.Set("cudnn", torch::cuda::cudnn_is_available());
    result.Set("cudaBuild",
#ifdef EASYINV_CUDA
               true
#else
               false
#endif
    );
    result.Set("threads", probe.threads);
    result.Set("compiledBundles", CompiledPackagesSupported());
    const std::string& builtins = PreloadNvrtcBuiltins();
    result.Set("nvrtcBuiltins", builtins.empty() ? env.Null() : Napi::String::New(env, builtins));
    auto list = Napi::Array::New(env, devices.size());
    for (size_t i = 0; i < devices.size(); ++i) {
      auto entry = Napi::Object::New(env);
      entry.Set("device", devices[i].name);
      entry.Set("name", devices[i].label);
      if (devices[i].memory_bytes > 0) entry.Set("memoryBytes", static_cast<double>(devices[i].memory_bytes));
      auto dtypes = Napi::Array::New(env, devices[i].dtypes.size());
      for (size_t j = 0; j < devices[i].dtypes.size(); ++j) dtypes.Set(static_cast<uint32_t>(j), devices[i].dtypes[j]);
      entry.Set("dtypes", dtypes);
      list.Set(static_cast<uint32_t>(i), entry);
    }
    result.Set("devices", list);
    return result;
  };
  return Schedule(info.Env(), c10::Device(c10::kCPU), "probing devices", ProbeDevices, deliver);
}

// Resolves once everything queued on the device before it has finished, kernels included.
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  c10::Device device = info[0].IsUndefined() ? c10::Device(c10::kCPU) : ParseDevice(info.Env(), info[0]);
  auto work = [device] {
    if (device.is_cuda()) torch::cuda::synchronize(device.index());
    return true;
  };
  auto deliver = [](Napi::Env env, bool) -> Napi::Value { return env.Undefined(); };
  return Schedule(info.Env(), device, "synchronize", work, deliver);
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
#ifdef EASYINV_CUDA
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  return info.Env().Undefined();
}

// Peak bytes the CUDA caching allocator handed out on `device` since the last reset; null on the CPU, which keeps
// no such account.
Napi::Value PeakMemory(const Napi::CallbackInfo& info) {
  [[maybe_unused]] c10::Device device = ParseDevice(info.Env(), info[0]);
#ifdef EASYINV_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return Napi::Number::New(info.Env(), static_cast<double>(stats.allocated_bytes[0].peak));  // [0]: all pools
  }
#endif
  return info.Env().Null();
}

Napi::Value ResetPeakMemory(const Napi::CallbackInfo& info) {
  [[maybe_unused]] c10::Device device = ParseDevice(info.Env(), info[0]);
#ifdef EASYINV_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  return info.Env().Undefined();
}

// LibTorch's process-wide CUDA switches (Python: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
// and .benchmark): the fields given are set, and the settings are returned. They change no result on the CPU.
Napi::Value CudaSettings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& context = at::globalContext();
  if (!info[0].IsUndefined()) {
    if (!info[0].IsObject()) ThrowType(env, "cudaSettings takes { matmulTf32, convolutionTf32, cudnnBenchmark }");
    auto update = info[0].As<Napi::Object>();
    auto flag = [&](const char* name, auto set) {
      Napi::Value value = update.Get(name);
      if (value.IsUndefined()) return;
      if (!value.IsBoolean()) ThrowType(env, std::string(name) + " must be true or false");
      set(value.As<Napi::Boolean>().Value());
    };
    flag("matmulTf32", [&](bool on) { context.setAllowTF32CuBLAS(on); });
    flag("convolutionTf32", [&](bool on) { context.setAllowTF32CuDNN(on); });
    flag("cudnnBenchmark", [&](bool on) { context.setBenchmarkCuDNN(on); });
  }
  auto settings = Napi::Object::New(env);
  settings.Set("matmulTf32", context.allowTF32CuBLAS());
  settings.Set("convolutionTf32", context.allowTF32CuDNN());
  settings.Set("cudnnBenchmark", context.benchmarkCuDNN());
  return settings;
}

// glibc hands large freed blocks back to the kernel (mmap'd ones, and a heap's trimmed top), so each forward of a
// large model on the CPU faults its activations in afresh: full-size SD-V1 UNet at 32x32 latents, 457,000 page
// faults per forward. With one arena for threads made from now on (the device threads), no mmap'd blocks and no
// trimming, freed memory is reused: about 100 faults, 2.74 -> 1.81 s per forward (without the one arena: 166,000
// faults, 2.3 s). The price: the process keeps its peak memory. glibc only; elsewhere it returns false.
Napi::Value RetainFreedMemory(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  const bool done = mallopt(M_ARENA_MAX, 1) == 1 && mallopt(M_MMAP_MAX, 0) == 1 &&
                    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max()) == 1;
  return Napi::Boolean::New(info.Env(), done);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

// The intra-op threads of every device thread, from its next job on (the policy, and its checks, are the library's).
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  SetIntraOpThreads(static_cast<int>(IntegerValue(info.Env(), info[0], "threads", 1, 1024)));
  return info.Env().Undefined();
}

Napi::Value LiveTensors(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(AddonOf(info.Env()).live_tensors));
}

}  // namespace

EnvState& EnvStateOf(Napi::Env env) { return *AddonOf(env).state; }

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  PreloadNvrtcBuiltins();  // before LibTorch's first use of NVRTC
  auto* addon = new Addon{std::make_shared<EnvState>(env)};
  env.SetInstanceData(addon);
  env.AddCleanupHook([state = addon->state] { state->Close(); });

  Napi::Function tensor_class = TensorWrap::Define(env);
  Napi::Function module_class = ModuleWrap::Define(env);
  addon->tensor_class = Napi::Persistent(tensor_class);
  addon->module_class = Napi::Persistent(module_class);
  exports.Set("Tensor", tensor_class);
  exports.Set("Module", module_class);
  exports.Set("loadModule", Napi::Function::New(env, ModuleWrap::Load, "loadModule"));
  exports.Set("capabilities", Napi::Function::New(env, Capabilities, "capabilities"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache, "emptyCache"));
  exports.Set("cudaSettings", Napi::Function::New(env, CudaSettings, "cudaSettings"));
  exports.Set("retainFreedMemory", Napi::Function::New(env, RetainFreedMemory, "retainFreedMemory"));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads, "setThreads"));
  exports.Set("liveTensors", Napi::Function::New(env, LiveTensors, "liveTensors"));
  exports.Set("peakMemory", Napi::Function::New(env, PeakMemory, "peakMemory"));
  exports.Set("resetPeakMemory", Napi::Function::New(env, ResetPeakMemory, "resetPeakMemory"));
  exports.Set("regularizeNoise", Napi::Function::New(env, RegularizeNoise, "regularizeNoise"));
  exports.Set("nvrtcCheck", Napi::Function::New(env, NvrtcCheck, "nvrtcCheck"));
  exports.Set("psnr", Napi::Function::New(env, Psnr, "psnr"));
  exports.Set("ssim", Napi::Function::New(env, Ssim, "ssim"));
  return exports;
}

}  // namespace
}  // namespace easyinv

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return easyinv::Init(env, exports); }
NODE_API_MODULE(easyinv, InitAddon)
