#pragma once

#include <napi.h>

namespace easyinv {

// psnr(a, b) and ssim(a, b): images [B, 3, H, W] in [0, 1] -> Promise<number[]>, one value per image.
Napi::Value Psnr(const Napi::CallbackInfo& info);
Napi::Value Ssim(const Napi::CallbackInfo& info);

}  // namespace easyinv
