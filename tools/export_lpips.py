#!/usr/bin/env python3
"""Makes the LPIPS network that easyinv's loadLpips / lpips use: LPIPS (Zhang et al. 2018), VGG trunk, v0.1
linear layers, from the `lpips` Python package, as a TorchScript file.

    pip install lpips torch
    python tools/export_lpips.py                                  # cpu, float32, writes lpips_vgg.pt
    python tools/export_lpips.py --device cuda --dtype float16 --out lpips_vgg_fp16.pt

The file's forward(a, b) takes two image batches [B,3,H,W] in [-1, 1] (the lpips package's convention; easyinv's
lpips() maps its [0, 1] images to [-1, 1] first) and returns the B distances, shape [B]. It is
lpips.LPIPS(net='vgg', version='0.1') called with normalize=False, flattened from [B,1,1,1] to [B].

The first run downloads torchvision's ImageNet VGG16 weights (the lpips package ships only its linear layers).

The check: the traced module and the eager one run on random inputs, at the traced shape, at another batch size
and at another image size (the traced module runs twice on each: the second call runs the TorchScript executor's
optimized graph). The largest absolute difference is printed; the export fails above TOLERANCE[dtype] (and on a
non-finite output). In float16 the traced module is also compared with the float32 eager network, because float16
can overflow in LPIPS's channel normalisation (a sum of squares of VGG activations) where float32 does not.
"""
import argparse
import sys

import torch
from torch import nn

TOLERANCE = {"float32": 1e-4, "float16": 1e-2}  # traced vs eager, same dtype
FLOAT16_VS_FLOAT32 = 5e-2  # float16 traced vs float32 eager


class LpipsWrapper(nn.Module):
    """forward(a, b): images [B,3,H,W] in [-1, 1] -> distances [B]. `model` follows lpips.LPIPS's
    forward(in0, in1, retPerLayer=False, normalize=False) -> [B,1,1,1]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.model(a, b, normalize=False).reshape(-1)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="export_lpips.py",
                                     description="Export LPIPS (VGG, v0.1) as a TorchScript file for easyinv.")
    parser.add_argument("--out", default="lpips_vgg.pt", help="file to write (default: lpips_vgg.pt)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device to trace on (default: cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="dtype to trace in (default: float32)")
    parser.add_argument("--size", type=int, default=256, help="image side of the trace input (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trace and check inputs (default: 0)")
    args = parser.parse_args(argv)
    if args.dtype == "float16" and args.device == "cpu":
        parser.error("--dtype float16 needs --device cuda: PyTorch has no float16 convolution on the CPU "
                     "(use --device cpu --dtype float32)")
    if args.size < 16:
        parser.error(f"--size {args.size} is too small: VGG's four max-pools need at least 16 pixels")
    return args


def build_lpips(device: str, dtype: torch.dtype) -> nn.Module:
    """lpips.LPIPS(net='vgg', version='0.1') in eval mode, without gradients, on device in dtype."""
    try:
        import lpips
    except ImportError as error:
        raise SystemExit("export_lpips: the `lpips` package is missing: pip install lpips") from error
    model = lpips.LPIPS(net="vgg", version="0.1").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


def random_images(batch: int, size: int, generator: torch.Generator, device: str, dtype: torch.dtype):
    """Two batches of uniform random images in [-1, 1]."""
    return [(torch.rand(batch, 3, size, size, generator=generator) * 2 - 1).to(device=device, dtype=dtype)
            for _ in range(2)]


def check(traced, eager: nn.Module, args, reference: nn.Module = None) -> float:
    """Largest |traced - eager| over inputs of the traced shape, another batch and another size; raises above the
    tolerance. `reference` (float16 only): the float32 eager wrapper, compared too with FLOAT16_VS_FLOAT32."""
    dtype = getattr(torch, args.dtype)
    generator = torch.Generator().manual_seed(args.seed + 1)
    worst = worst_reference = 0.0
    for batch, size in ((1, args.size), (3, args.size), (2, args.size // 2 + 16)):
        a, b = random_images(batch, size, generator, args.device, dtype)
        with torch.no_grad():
            expected = eager(a, b).float()
            outputs = [traced(a, b).float() for _ in range(2)]
            if reference is not None:
                float32 = reference(a.float(), b.float())
                worst_reference = max(worst_reference, (outputs[-1] - float32).abs().max().item())
        for output in outputs:
            if tuple(output.shape) != (batch,):
                raise SystemExit(f"export_lpips: the traced module returned shape {tuple(output.shape)} for batch "
                                 f"{batch}, expected ({batch},)")
            if not torch.isfinite(output).all():
                raise SystemExit(f"export_lpips: the traced module returned non-finite distances {output.tolist()}")
            worst = max(worst, (output - expected).abs().max().item())
    print(f"export_lpips: largest |traced - eager| {worst:.3g} (tolerance {TOLERANCE[args.dtype]:g})")
    if worst > TOLERANCE[args.dtype]:
        raise SystemExit("export_lpips: the traced module does not match the eager one")
    if reference is not None:
        print(f"export_lpips: largest |float16 traced - float32 eager| {worst_reference:.3g} "
              f"(tolerance {FLOAT16_VS_FLOAT32:g})")
        if worst_reference > FLOAT16_VS_FLOAT32:
            raise SystemExit("export_lpips: float16 LPIPS differs from float32; export in float32 instead")
    return worst


def export(args) -> float:
    dtype = getattr(torch, args.dtype)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("export_lpips: --device cuda, but this PyTorch sees no CUDA device")
    eager = LpipsWrapper(build_lpips(args.device, dtype))
    generator = torch.Generator().manual_seed(args.seed)
    example = tuple(random_images(1, args.size, generator, args.device, dtype))
    with torch.no_grad():
        traced = torch.jit.trace(eager, example, check_trace=False)
    reference = LpipsWrapper(build_lpips(args.device, torch.float32)) if args.dtype == "float16" else None
    worst = check(traced, eager, args, reference)
    torch.jit.save(traced, args.out)
    print(f"export_lpips: wrote {args.out} (LPIPS VGG v0.1, traced on {args.device} in {args.dtype}: "
          "forward(a, b) with images in [-1, 1] -> distances [B])")
    return worst


def main(argv=None) -> int:
    export(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
