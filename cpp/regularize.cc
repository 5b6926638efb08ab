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

// The pyramid levels' sides: side, side / 2, ... until one is 8 or less.
std::vector<int64_t> LevelSides(int64_t side) {
  std::vector<int64_t> sides = {side};
  while (sides.back() > 8) sides.push_back(sides.back() / 2);
  return sides;
}

// Every shift of a run, drawn up front in the reference's order (per step, roll, channel, level: r in [0, side/2)),
// so that one upload replaces a host round trip per draw. Shape [steps, rolls, channels, levels].
at::Tensor DrawShifts(const Settings& settings, int64_t channels, int64_t side) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(settings.seed);
  const std::vector<int64_t> sides = LevelSides(side);
  const int64_t levels = static_cast<int64_t>(sides.size());
  at::Tensor shifts = at::empty({settings.steps, settings.rolls, channels, levels}, at::kLong);
  int64_t* out = shifts.data_ptr<int64_t>();
  for (int64_t i = 0; i < shifts.numel(); ++i) {
    out[i] = at::randint(std::max<int64_t>(sides[i % levels] / 2, 1), {1}, generator).item<int64_t>();
  }
  return shifts;
}

// roll(x, shifts[c], dim) for each channel c at once: out[.., i, ..] = x[.., (i - shift) mod n, ..].
at::Tensor RollPerChannel(const at::Tensor& x, const at::Tensor& shifts, int64_t dim) {
  const int64_t n = x.size(dim), channels = x.size(1);
  at::Tensor index = (at::arange(n, shifts.options()).unsqueeze(0) - shifts.unsqueeze(1)).remainder(n);  // [C, n]
  std::vector<int64_t> shape = {1, channels, 1, 1};
  shape[dim] = n;
  return x.gather(dim, index.view(shape).expand_as(x));
}

// sum over samples, channels and pyramid levels of mean(x * roll(x, r))^2 along both axes; shifts [channels, levels].
at::Tensor AutoCorrelationLoss(const at::Tensor& sample, const at::Tensor& shifts) {
  at::Tensor loss = at::zeros({}, sample.options());
  at::Tensor noise = sample;
  for (int64_t level = 0; level < shifts.size(1); ++level) {
    if (level > 0) noise = at::avg_pool2d(noise, {2, 2});
    const at::Tensor level_shifts = shifts.select(1, level);
    loss = loss + (noise * RollPerChannel(noise, level_shifts, 2)).mean({2, 3}).pow(2).sum() +
           (noise * RollPerChannel(noise, level_shifts, 3)).mean({2, 3}).pow(2).sum();
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

// The whole batch at once: each loss is a sum over samples, so each sample's gradient is its own, and every sample
// gets the shifts it would get alone.
at::Tensor Regularize(const at::Tensor& eps, const at::Tensor& target, const Settings& settings) {
  c10::InferenceMode normal_tensors(false);  // autograd cannot record on inference tensors
  torch::AutoGradMode grad_mode(true);
  at::Tensor shifts;
  if (settings.lambda_ac > 0) {
    shifts = DrawShifts(settings, eps.size(1), eps.size(2));
    // from pinned memory the upload queues behind the device's work instead of waiting for it
    if (!eps.device().is_cpu()) shifts = shifts.pin_memory().to(eps.device(), /*non_blocking=*/true);
  }
  at::Tensor x = eps.to(at::kFloat).clone();
  const at::Tensor goal = target.to(at::kFloat).clone();
  for (int64_t step = 0; step < settings.steps; ++step) {
    if (settings.lambda_kl > 0) {
      at::Tensor grad = Gradient(x, [&](const at::Tensor& v) { return PatchKlLoss(v, goal); });
      x = x - settings.lambda_kl * grad.clamp(-100, 100);
    }
    for (int64_t roll = 0; settings.lambda_ac > 0 && roll < settings.rolls; ++roll) {
      const at::Tensor roll_shifts = shifts[step][roll];
      at::Tensor grad = Gradient(x, [&](const at::Tensor& v) { return AutoCorrelationLoss(v, roll_shifts); });
      x = x - settings.lambda_ac * grad / static_cast<double>(settings.rolls);
    }
  }
  c10::InferenceMode inference;
  return x.detach().to(eps.scalar_type());
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
