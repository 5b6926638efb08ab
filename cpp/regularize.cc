// ReNoise's noise regularisation (Garibi et al. 2024, after pix2pix-zero): gradient steps on a noise prediction
// that pull its pairwise auto-correlation toward zero and its per-patch statistics toward a target noise. It needs
// autograd, so it lives here rather than in the TypeScript layer.
#include "regularize.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

#include "convert.h"
#include "queue.h"
#include "tensor.h"

namespace easyinv {
namespace {

struct Settings {
  double lambda_ac, lambda_kl;
  int64_t steps, rolls;
  uint64_t seed;
};

// sum over channels and scales of mean(x * roll(x, r))^2 along both axes, r random in [0, side/2).
at::Tensor AutoCorrelationLoss(const at::Tensor& sample, at::Generator& generator) {
  at::Tensor loss = at::zeros({}, sample.options());
  for (int64_t channel = 0; channel < sample.size(1); ++channel) {
    at::Tensor noise = sample.select(1, channel).unsqueeze(1);
    for (;;) {
      int64_t shift = at::randint(std::max<int64_t>(noise.size(2) / 2, 1), {1}, generator).item<int64_t>();
      loss = loss + (noise * at::roll(noise, {shift}, {2})).mean().pow(2) +
             (noise * at::roll(noise, {shift}, {3})).mean().pow(2);
      if (noise.size(2) <= 8) break;
      noise = at::avg_pool2d(noise, {2, 2});
    }
  }
  return loss;
}

// sum over 4x4 patches (all channels) of |KL| between the per-channel Gaussians of x's and target's patch.
at::Tensor PatchKlLoss(const at::Tensor& sample, const at::Tensor& target) {
  const int64_t patch = 4, channels = sample.size(1);
  auto patches = [&](const at::Tensor& x) {
    return x.unfold(1, channels, channels).unfold(2, patch, patch).unfold(3, patch, patch).contiguous()
        .view({-1, channels, patch * patch});
  };
  at::Tensor x = patches(sample), y = patches(target);
  const double epsilon = 1e-6;
  at::Tensor mean_x = x.mean(-1), mean_y = y.mean(-1), var_x = x.var(-1), var_y = y.var(-1);
  at::Tensor kl = at::log((var_y + epsilon) / (var_x + epsilon)) + (var_x + (mean_x - mean_y).pow(2)) / (var_y + epsilon) - 1;
  return kl.abs().sum();
}

at::Tensor Gradient(const at::Tensor& value, const std::function<at::Tensor(const at::Tensor&)>& loss) {
  at::Tensor variable = value.detach().clone().requires_grad_(true);
  return torch::autograd::grad({loss(variable)}, {variable})[0];
}

at::Tensor Regularize(const at::Tensor& eps, const at::Tensor& target, const Settings& settings) {
  c10::InferenceMode normal_tensors(false);  // autograd cannot record on inference tensors
  torch::AutoGradMode grad_mode(true);
  std::vector<at::Tensor> samples;
  for (int64_t b = 0; b < eps.size(0); ++b) {
    // One generator per sample, so a batch gets the same shifts as its samples run one by one.
    auto generator = at::make_generator<at::CPUGeneratorImpl>(settings.seed);
    at::Tensor x = eps.narrow(0, b, 1).to(at::kFloat).clone();
    at::Tensor goal = target.narrow(0, b, 1).to(at::kFloat).clone();
    for (int64_t step = 0; step < settings.steps; ++step) {
      if (settings.lambda_kl > 0) {
        at::Tensor grad = Gradient(x, [&](const at::Tensor& v) { return PatchKlLoss(v, goal); });
        x = x - settings.lambda_kl * grad.clamp(-100, 100);
      }
      for (int64_t roll = 0; settings.lambda_ac > 0 && roll < settings.rolls; ++roll) {
        at::Tensor grad = Gradient(x, [&](const at::Tensor& v) { return AutoCorrelationLoss(v, generator); });
        x = x - settings.lambda_ac * grad / static_cast<double>(settings.rolls);
      }
    }
    samples.push_back(x.detach());
  }
  c10::InferenceMode inference;
  return at::cat(samples, 0).to(eps.scalar_type());
}

}  // namespace

Napi::Value RegularizeNoise(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor eps = TensorWrap::Extract(env, info[0], "eps");
  at::Tensor target = TensorWrap::Extract(env, info[1], "target");
  if (!info[2].IsObject()) ThrowType(env, "regularizeNoise needs options { lambdaAc, lambdaKl, steps, rolls, seed }");
  Napi::Object options = info[2].As<Napi::Object>();
  auto fraction = [&](const char* name) {
    Napi::Value value = options.Get(name);
    if (!value.IsNumber() || !(value.As<Napi::Number>().DoubleValue() >= 0) ||
        !std::isfinite(value.As<Napi::Number>().DoubleValue())) {
      ThrowType(env, std::string("regularizeNoise option ") + name + " must be a finite non-negative number");
    }
    return value.As<Napi::Number>().DoubleValue();
  };
  auto count = [&](const char* name, int64_t max) {
    return IntegerValue(env, options.Get(name), std::string("regularizeNoise option ") + name, 0, max);
  };
  Settings settings{fraction("lambdaAc"), fraction("lambdaKl"), count("steps", 1000), count("rolls", 1000),
                    static_cast<uint64_t>(count("seed", kMaxSafeInteger))};
  if (eps.dim() != 4 || !eps.sizes().equals(target.sizes())) {
    ThrowType(env, "regularizeNoise needs eps and target of the same shape [B, C, H, W]");
  }
  auto work = [eps, target, settings] { return Regularize(eps, target, settings); };
  auto deliver = [](Napi::Env env, const at::Tensor& tensor) -> Napi::Value { return TensorWrap::Wrap(env, tensor); };
  return Schedule(env, eps.device(), "regularizeNoise", work, deliver);
}

}  // namespace easyinv
