#!/usr/bin/env python3
"""Writes the small TorchScript modules the native-core tests use, into weights/test/.

Run with Debian's python3-torch (1.13) so that LibTorch 1.13 and newer can load the files:
    /usr/bin/python3 test/python/make_test_modules.py
The weights are seeded, so the files are the same on every run of the same PyTorch.
"""
import json
import math
import os
import sys
from typing import Dict

import torch
from torch import nn


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(REPO, "weights")
sys.path.insert(0, os.path.join(REPO, "tools"))

from torchscript_file import save_without_sources  # noqa: E402

OUT = os.path.join(WEIGHTS, "test")


class ConvUNet(nn.Module):
    """A UNet-shaped noise predictor with the SD signature: (sample[B,4,h,w], timestep int64[B], cond[B,77,D])."""

    def __init__(self, channels: int = 32, cond_dim: int = 32):
        super().__init__()
        self.channels = channels
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.time_proj = nn.Linear(channels, channels)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(cond_dim, channels)
        self.to_v = nn.Linear(cond_dim, channels)
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.conv_out = nn.Conv2d(2 * channels, 4, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=sample.device) / half)
        angles = (timestep.float()[:, None] * frequencies[None, :]).to(self.time_proj.weight.dtype)
        embedding = self.time_proj(torch.cat([angles.sin(), angles.cos()], dim=1)).to(sample.dtype)
        skip = torch.nn.functional.silu(self.conv_in(sample) + embedding[:, :, None, None])
        hidden = torch.nn.functional.silu(self.down(skip))
        batch, channels, height, width = hidden.shape
        tokens = hidden.flatten(2).transpose(1, 2)
        query, key, value = self.to_q(tokens), self.to_k(encoder_hidden_states), self.to_v(encoder_hidden_states)
        weights = torch.softmax(query @ key.transpose(1, 2) / math.sqrt(channels), dim=-1)
        tokens = tokens + weights @ value
        hidden = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.conv_out(torch.cat([skip, self.up(hidden)], dim=1))


class SlowChain(nn.Module):
    """Many dependent matrix products: a forward that takes a while, for event-loop tests."""

    def __init__(self, width: int = 256, rounds: int = 40):
        super().__init__()
        self.rounds = rounds
        self.weight = nn.Parameter(torch.randn(width, width) / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.rounds):
            x = torch.tanh(x @ self.weight)
        return x


class Pair(nn.Module):
    """Returns a tuple, like SDXL's second text encoder (hidden states, pooled)."""

    def forward(self, x: torch.Tensor):
        return x * 2, x.sum(dim=-1)


class Positions(nn.Module):
    """CLIP's embedding layout: an int64 position_ids buffer indexes a float table. Designed weights give an analytic
    output: ids[b, j] + j / 2 in every channel."""

    def __init__(self, width: int = 4, positions: int = 77):
        super().__init__()
        self.token, self.position = nn.Embedding(100, width), nn.Embedding(positions, width)
        with torch.no_grad():
            self.token.weight.copy_(torch.arange(100.0)[:, None].expand(-1, width))
            self.position.weight.copy_(torch.arange(positions)[:, None].expand(-1, width) / 2)
        self.register_buffer("position_ids", torch.arange(positions).expand(1, -1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token(ids) + self.position(self.position_ids[:, : ids.shape[1]])


class TupleUNet(nn.Module):
    """A noise predictor with the UNet signature that returns a tuple, as a diffusers UNet does with return_dict."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor):
        return sample * 0.5, cond


class DeviceOutput(nn.Module):
    """Returns a tensor beside a torch.device, a value that has no JS counterpart."""

    def forward(self, x: torch.Tensor):
        return x * 2, x.device


class IntKeyOutput(nn.Module):
    """Returns a dict keyed by integers; a JS object's keys are strings."""

    def forward(self, x: torch.Tensor) -> Dict[int, torch.Tensor]:
        return {1: x * 2}


class OneChannelUNet(nn.Module):
    """A noise predictor with the UNet signature whose output has one channel: it would broadcast in the step."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return sample[:, :1] * 0.5


def seeded_randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def reference(unet: torch.jit.ScriptModule) -> dict:
    """Values computed here, in PyTorch, that the tests compare the addon's results with."""
    sample, cond = seeded_randn([2, 4, 16, 16], 11), seeded_randn([2, 77, 32], 12)
    timestep = torch.tensor([10, 500], dtype=torch.int64)
    with torch.no_grad():
        eps = unet(sample, timestep, cond)
    return {
        "randn": {"shape": [3, 5], "seed": 7, "values": seeded_randn([3, 5], 7).flatten().tolist()},
        "conv_unet": {"sample_seed": 11, "cond_seed": 12, "timestep": [10, 500], "eps": eps.flatten().tolist()},
    }


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    modules = {"conv_unet": ConvUNet(), "slow_chain": SlowChain(), "pair": Pair(), "positions": Positions(),
               "tuple_unet": TupleUNet(), "one_channel_unet": OneChannelUNet(),
               "device_output": DeviceOutput(), "int_key_output": IntKeyOutput()}
    for name, module in modules.items():
        scripted = torch.jit.script(module.eval())
        path = os.path.join(OUT, f"{name}.pt")
        save_without_sources(scripted, path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
    path = os.path.join(OUT, "reference.json")
    with open(path, "w") as file:
        json.dump(reference(torch.jit.load(os.path.join(OUT, "conv_unet.pt"))), file)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
