// NVRTC, CUDA's runtime compiler: TorchScript's CUDA fuser compiles its fused kernels with it from a module's second
// forward on, and cuDNN's runtime-compiled engines use it too.
#pragma once

#include <napi.h>

#include <string>

namespace easyinv {

// pip's NVRTC (nvidia/cu13/lib/libnvrtc.so.13) opens its builtins library by name, and has no RUNPATH to find it
// beside itself: Python's torch preloads it, a Node process must too. Loads it by absolute path from the folders
// where the LibTorch in use finds its NVRTC; returns the path loaded, or "" where there is none (a CPU build, a
// system CUDA whose loader finds it). Once per process.
const std::string& PreloadNvrtcBuiltins();

// nvrtcCheck(): compiles a small kernel with the NVRTC that LibTorch loads, from this process, and resolves to
// { library, builtins }; rejects with NVRTC's message. Needs no GPU, only a CUDA build.
Napi::Value NvrtcCheck(const Napi::CallbackInfo& info);

}  // namespace easyinv
