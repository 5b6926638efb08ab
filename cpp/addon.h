// The addon's state per JS environment (main thread, each worker thread): no static V8 state, so it loads in
// worker threads and Electron.
#pragma once

#include <napi.h>

#include <memory>

#include "queue.h"

namespace easyinv {

struct Addon {
  std::shared_ptr<EnvState> state;
  Napi::FunctionReference tensor_class;
  Napi::FunctionReference module_class;
  int64_t live_tensors = 0;  // Tensor handles not yet disposed (JS thread only)
};

inline Addon& AddonOf(Napi::Env env) { return *env.GetInstanceData<Addon>(); }

}  // namespace easyinv
