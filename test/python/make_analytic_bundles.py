#!/usr/bin/env python3
"""Writes the analytic bundles (family "test"): noise predictors whose exact answer is known.

- weights/analytic-gaussian: data x0 ~ N(mu, s^2 I); the exact noise predictor is
  eps(x, t) = sqrt(1 - a_t) (x - sqrt(a_t) mu) / (a_t s^2 + 1 - a_t).
- weights/analytic-mixture: x0 ~ sum_k pi_k N(mu_k, s_k^2 I); eps(x, t) = -sqrt(1 - a_t) grad log p_t(x), where
  grad log p_t(x) = -sum_k r_k(x) (x - sqrt(a_t) mu_k) / (a_t s_k^2 + 1 - a_t), r = softmax of the log-densities.
In both, the condition's first value shifts every mean (so that guidance changes the answer); an empty prompt's
condition is zeros. Run with Debian's python3-torch (1.13): /usr/bin/python3 test/python/make_analytic_bundles.py
"""
import json
import math
import os
import sys

import torch
from torch import nn


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(REPO, "weights")
sys.path.insert(0, os.path.join(REPO, "tools"))

from torchscript_file import save_without_sources  # noqa: E402
CHANNELS, SIZE, COND = 4, 8, (77, 8)
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1, "set_alpha_to_one": False, "timestep_spacing": "leading"}


def alpha_bars() -> torch.Tensor:
    betas = torch.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


class GaussianNoise(nn.Module):
    def __init__(self, mu: torch.Tensor, std: float):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bars().float())
        self.register_buffer("mu", mu)
        self.variance = std ** 2

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[timestep].to(sample.dtype)[:, None, None, None]
        mu = self.mu[None] + encoder_hidden_states[:, 0, 0, None, None, None]
        return torch.sqrt(1 - a) * (sample - torch.sqrt(a) * mu) / (a * self.variance + 1 - a)


class MixtureNoise(nn.Module):
    def __init__(self, mus: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bars().float())
        self.register_buffer("mus", mus)
        self.register_buffer("variances", stds ** 2)
        self.register_buffer("log_weights", weights.log())

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        batch = sample.shape[0]
        a = self.alpha_bar[timestep].to(sample.dtype)[:, None]                               # [B, 1]
        x = sample.reshape(batch, 1, -1)                                                     # [B, 1, D]
        mus = self.mus.reshape(1, self.mus.shape[0], -1) + encoder_hidden_states[:, 0, 0, None, None]
        variance = a * self.variances[None] + 1 - a                                           # [B, K]
        diff = x - torch.sqrt(a)[:, :, None] * mus                                           # [B, K, D]
        dims = float(x.shape[2])
        log_density = self.log_weights[None] - 0.5 * dims * torch.log(2 * math.pi * variance) \
            - 0.5 * (diff ** 2).sum(-1) / variance
        responsibility = torch.softmax(log_density, dim=1)                                    # [B, K]
        score = -(responsibility[:, :, None] * diff / variance[:, :, None]).sum(1)            # [B, D]
        return (-torch.sqrt(1 - a) * score).reshape(sample.shape)


def write_bundle(name: str, module: nn.Module, description: str) -> None:
    folder = os.path.join(WEIGHTS, name)
    os.makedirs(folder, exist_ok=True)
    save_without_sources(torch.jit.script(module.eval()), os.path.join(folder, "unet.pt"))
    manifest = {
        "format": "easyinv-bundle/1", "family": "test", "name": f"easyinv/{name}", "description": description,
        "device": "cpu", "dtype": "float32", "dtypes": ["float32", "float16"], "resolution": SIZE * 8,
        "latent": {"channels": CHANNELS, "size": SIZE, "scaling_factor": 1.0},
        "cond_shape": list(COND), "scheduler": SCHEDULER, "files": {"unet": "unet.pt"},
    }
    with open(os.path.join(folder, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")
    print(f"wrote {folder}")


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    shape = (CHANNELS, SIZE, SIZE)
    write_bundle("analytic-gaussian", GaussianNoise(0.5 * torch.randn(shape, generator=generator), 0.5),
                 "x0 ~ N(mu, 0.25 I): the exact noise predictor")
    mus = torch.randn((3, *shape), generator=generator)
    write_bundle("analytic-mixture", MixtureNoise(mus, torch.tensor([0.3, 0.5, 0.4]), torch.tensor([0.5, 0.3, 0.2])),
                 "x0 ~ a mixture of three Gaussians: the exact noise predictor")


if __name__ == "__main__":
    main()
