#include "nvrtc.h"

#include <dlfcn.h>
#include <glob.h>
#include <limits.h>
#include <stdlib.h>

#include <mutex>
#include <vector>

#include <torch/script.h>
#include <torch/version.h>

#ifdef EASYINV_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <nvrtc.h>
#endif

#include "queue.h"

namespace easyinv {
namespace {

#ifdef EASYINV_CUDA

// Where LibTorch's libcaffe2_nvrtc.so finds libnvrtc: its RUNPATH in pip's wheels (nvidia/cu13/lib for CUDA 13,
// nvidia/cuda_nvrtc/lib for CUDA 12, beside the torch package), or its own folder in a LibTorch archive.
std::vector<std::string> NvrtcFolders() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&c10::cuda::device_count), &info) == 0 || info.dli_fname == nullptr) return {};
  const std::string file = info.dli_fname;
  const std::string torch_lib = file.substr(0, file.rfind('/'));
  return {torch_lib + "/../../nvidia/cu13/lib", torch_lib + "/../../nvidia/cuda_nvrtc/lib", torch_lib};
}

// The first file matching `name_pattern` in those folders, resolved; "" if none. The .alt variants are NVIDIA's
// alternative builds, which LibTorch does not load.
std::string FindNvrtcFile(const char* name_pattern) {
  for (const auto& folder : NvrtcFolders()) {
    glob_t found{};
    std::string match;
    if (glob((folder + "/" + name_pattern).c_str(), 0, nullptr, &found) == 0) {
      for (size_t i = 0; i < found.gl_pathc && match.empty(); ++i) {
        const std::string path = found.gl_pathv[i];
        char resolved[PATH_MAX];
        if (path.find(".alt.") == std::string::npos && realpath(path.c_str(), resolved) != nullptr) match = resolved;
      }
    }
    globfree(&found);
    if (!match.empty()) return match;
  }
  return "";
}

struct NvrtcCheckResult {
  std::string library;
  std::string builtins;
};

// What TorchScript's fuser does on a GPU, short of running the kernel: compile a program with NVRTC in this process.
NvrtcCheckResult CompileSmallKernel() {
  const std::string builtins = PreloadNvrtcBuiltins();
  const std::string library = FindNvrtcFile("libnvrtc.so.*");
  TORCH_CHECK(!library.empty(), "no libnvrtc.so.* where LibTorch looks for it (beside the torch package: "
              "nvidia/cu13/lib or nvidia/cuda_nvrtc/lib; or LibTorch's lib folder)");
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept: LibTorch loads the same one later
  TORCH_CHECK(handle != nullptr, "cannot load ", library, ": ", dlerror());
  auto symbol = [&](const char* name) {
    void* found = dlsym(handle, name);
    TORCH_CHECK(found != nullptr, library, " has no ", name);
    return found;
  };
  auto create = reinterpret_cast<decltype(&nvrtcCreateProgram)>(symbol("nvrtcCreateProgram"));
  auto compile = reinterpret_cast<decltype(&nvrtcCompileProgram)>(symbol("nvrtcCompileProgram"));
  auto log_size = reinterpret_cast<decltype(&nvrtcGetProgramLogSize)>(symbol("nvrtcGetProgramLogSize"));
  auto log = reinterpret_cast<decltype(&nvrtcGetProgramLog)>(symbol("nvrtcGetProgramLog"));
  auto destroy = reinterpret_cast<decltype(&nvrtcDestroyProgram)>(symbol("nvrtcDestroyProgram"));
  auto error_text = reinterpret_cast<decltype(&nvrtcGetErrorString)>(symbol("nvrtcGetErrorString"));

  const char* source = "extern \"C\" __global__ void scale(float* x, float a) { x[threadIdx.x] *= a; }";
  nvrtcProgram program = nullptr;
  nvrtcResult status = create(&program, source, "scale.cu", 0, nullptr, nullptr);
  TORCH_CHECK(status == NVRTC_SUCCESS, "nvrtcCreateProgram: ", error_text(status));
  status = compile(program, 0, nullptr);
  std::string messages;
  size_t size = 0;
  if (log_size(program, &size) == NVRTC_SUCCESS && size > 1) {
    messages.resize(size);
    log(program, messages.data());
    messages.resize(size - 1);
  }
  destroy(&program);
  TORCH_CHECK(status == NVRTC_SUCCESS, "NVRTC (", library, ") could not compile a small kernel: ", error_text(status),
              messages.empty() ? "" : ": ", messages);
  return {library, builtins};
}

#else

struct NvrtcCheckResult {
  std::string library;
  std::string builtins;
};

NvrtcCheckResult CompileSmallKernel() {
  TORCH_CHECK(false, "nvrtcCheck needs a CUDA build of easyinv; this one links LibTorch ", TORCH_VERSION,
              " for the CPU");
}

#endif

}  // namespace

const std::string& PreloadNvrtcBuiltins() {
  static std::once_flag once;
  static std::string loaded;
  std::call_once(once, [] {
#ifdef EASYINV_CUDA
    const std::string path = FindNvrtcFile("libnvrtc-builtins.so.*");
    if (!path.empty() && dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) loaded = path;
#endif
  });
  return loaded;
}

Napi::Value NvrtcCheck(const Napi::CallbackInfo& info) {
  auto deliver = [](Napi::Env env, const NvrtcCheckResult& result) -> Napi::Value {
    auto object = Napi::Object::New(env);
    object.Set("library", result.library);
    object.Set("builtins", result.builtins);
    return object;
  };
  return Schedule(info.Env(), c10::Device(c10::kCPU), "checking NVRTC", CompileSmallKernel, deliver);
}

}  // namespace easyinv
