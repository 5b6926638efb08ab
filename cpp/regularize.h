#pragma once

#include <napi.h>

namespace easyinv {

// regularizeNoise(eps, target, { lambdaAc, lambdaKl, steps, rolls, seed }) -> Promise<Tensor>
Napi::Value RegularizeNoise(const Napi::CallbackInfo& info);

}  // namespace easyinv
