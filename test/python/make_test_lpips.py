#!/usr/bin/env python3
"""Writes weights/test-lpips/lpips.pt: a small stand-in for the LPIPS network of tools/export_lpips.py, for the
tests (test/lpips.test.ts). It is NOT a perceptual metric: its weights are random (seeded).

It has LPIPS's structure (Zhang et al. 2018, v0.1) at a small size: the lpips ScalingLayer, a VGG-like trunk
(3x3 convolutions + ReLU, max-pools between stages) tapped at 5 depths, unit normalisation of each tap over the
channels, squared difference, a 1x1 "lin" convolution per tap with non-negative weights and no bias, spatial mean
and the sum over taps. It is wrapped in export_lpips.LpipsWrapper, the wrapper the real export uses, and scripted
(not traced), so it runs at any batch and image size: forward(a, b), images [B,3,H,W] in [-1, 1] -> [B].

Run with Debian's python3-torch (1.13) so that LibTorch 1.13 and newer can load the file:
    /usr/bin/python3 test/python/make_test_lpips.py
"""
import os
import sys
from typing import List

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
from export_lpips import LpipsWrapper  # noqa: E402
from torchscript_file import save_without_sources  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "weights", "test-lpips", "lpips.pt")
CHANNELS = (4, 8, 12, 16, 16)  # VGG16's taps have 64, 128, 256, 512, 512
CONVS = (2, 2, 3, 3, 3)  # 3x3 convolutions per stage, as in VGG16


class ScalingLayer(nn.Module):
    """The lpips package's input scaling: (x - shift) / scale per RGB channel."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class Trunk(nn.Module):
    """VGG-like: stage k is (max-pool unless k = 0) then CONVS[k] x (3x3 conv + ReLU); the output of every stage is
    a tap."""

    def __init__(self):
        super().__init__()
        stages, previous = [], 3
        for index, (channels, convs) in enumerate(zip(CHANNELS, CONVS)):
            layers: List[nn.Module] = [nn.MaxPool2d(2, 2)] if index > 0 else []
            for _ in range(convs):
                layers += [nn.Conv2d(previous, channels, 3, padding=1), nn.ReLU()]
                previous = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        taps: List[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps


def unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class TinyLpips(nn.Module):
    """lpips.LPIPS's forward convention: (in0, in1, retPerLayer=False, normalize=False) -> [B,1,1,1]."""

    def __init__(self):
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = Trunk()
        self.lins = nn.ModuleList([nn.Conv2d(channels, 1, 1, bias=False) for channels in CHANNELS])

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, retPerLayer: bool = False,
                normalize: bool = False) -> torch.Tensor:
        if retPerLayer:
            raise RuntimeError("TinyLpips does not return per-layer distances")
        if normalize:  # [0, 1] -> [-1, 1], as lpips does
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        taps0, taps1 = self.net(self.scaling_layer(in0)), self.net(self.scaling_layer(in1))
        total = torch.zeros(in0.shape[0], 1, 1, 1, dtype=in0.dtype, device=in0.device)
        for index, lin in enumerate(self.lins):
            difference = (unit_normalize(taps0[index]) - unit_normalize(taps1[index])) ** 2
            total = total + lin(difference).mean([2, 3], keepdim=True)
        return total


def build(seed: int = 0) -> LpipsWrapper:
    """The seeded stand-in, wrapped as the export wraps lpips.LPIPS, in eval mode without gradients."""
    torch.manual_seed(seed)
    model = TinyLpips()
    with torch.no_grad():
        for lin in model.lins:
            lin.weight.abs_()  # LPIPS's learned lin weights are non-negative, so distances are too
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return LpipsWrapper(model).eval()


def main() -> None:
    scripted = torch.jit.script(build())
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_without_sources(scripted, OUT)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
