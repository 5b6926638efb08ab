// Image quality on the device, batched, in float64, with the definitions of scikit-image (data range 1):
// peak_signal_noise_ratio, and structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False).
#include "metrics.h"

#include <torch/script.h>

#include "convert.h"
#include "queue.h"
#include "tensor.h"

namespace easyinv {
namespace {

std::pair<at::Tensor, at::Tensor> ImagePair(const Napi::CallbackInfo& info, const char* metric) {
  Napi::Env env = info.Env();
  at::Tensor a = TensorWrap::Extract(env, info[0], "a"), b = TensorWrap::Extract(env, info[1], "b");
  if (a.dim() != 4 || !a.sizes().equals(b.sizes())) {
    ThrowType(env, std::string(metric) + " needs two image tensors of the same shape [B, C, H, W]");
  }
  return {a, b};
}

Napi::Value PerImage(Napi::Env env, const at::Tensor& values) {
  auto array = Napi::Array::New(env, values.size(0));
  auto accessor = values.accessor<double, 1>();
  for (int64_t i = 0; i < values.size(0); ++i) array.Set(static_cast<uint32_t>(i), accessor[i]);
  return array;
}

// scipy.ndimage's Gaussian (sigma 1.5, truncate 3.5: radius 5), normalised, as an 11x11 depthwise kernel.
at::Tensor GaussianWindow(int64_t channels, const at::TensorOptions& options) {
  const double sigma = 1.5;
  const int64_t radius = 5;
  at::Tensor x = at::arange(-radius, radius + 1, options);
  at::Tensor line = at::exp(-0.5 * x * x / (sigma * sigma));
  line = line / line.sum();
  return at::outer(line, line).expand({channels, 1, 2 * radius + 1, 2 * radius + 1}).contiguous();
}

at::Tensor SsimPerImage(const at::Tensor& a, const at::Tensor& b) {
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  const int64_t channels = x.size(1);
  at::Tensor window = GaussianWindow(channels, x.options());
  // Without padding the filter sees only the valid region, the part scikit-image averages over.
  const std::vector<int64_t> unit = {1, 1}, none = {0, 0};
  auto filter = [&](const at::Tensor& t) { return at::conv2d(t, window, at::Tensor(), unit, none, unit, channels); };
  at::Tensor mx = filter(x), my = filter(y);
  at::Tensor vx = filter(x * x) - mx * mx, vy = filter(y * y) - my * my, cxy = filter(x * y) - mx * my;
  at::Tensor map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
  return map.mean({1, 2, 3});
}

}  // namespace

Napi::Value Psnr(const Napi::CallbackInfo& info) {
  auto [a, b] = ImagePair(info, "psnr");
  auto work = [a, b] {
    at::Tensor mse = (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean({1, 2, 3});
    return (10 * at::log10(1 / mse)).cpu();
  };
  return Schedule(info.Env(), a.device(), "psnr", work, PerImage);
}

Napi::Value Ssim(const Napi::CallbackInfo& info) {
  auto [a, b] = ImagePair(info, "ssim");
  if (a.size(2) < 11 || a.size(3) < 11) ThrowType(info.Env(), "ssim needs images of at least 11x11 pixels");
  return Schedule(info.Env(), a.device(), "ssim", [a, b] { return SsimPerImage(a, b).cpu(); }, PerImage);
}

}  // namespace easyinv
