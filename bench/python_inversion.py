#!/usr/bin/env python3
"""The ratio to beat for `easyinv bench`: DDIM inversion written directly in PyTorch over a bundle's TorchScript
files or .pt2 packages (the same UNet, schedule, steps and guidance), timed the same way (device synchronised,
warm-up excluded).
Usage: python_inversion.py BUNDLE --device cpu --dtype float32 --steps 50 --batch 1 --guidance 1 --repeats 5
  -> JSON on stdout with the median; with --serve, after a warm-up it prints {"ready": ...} and then times one
  inversion per line read from stdin, so that easyinv bench can interleave its rounds with ours.
CUDA: --cuda-graphs replays the UNet call from a torch.cuda.CUDAGraph (the strongest plain-PyTorch loop);
--matmul-tf32, --convolution-tf32, --cudnn-benchmark (0 or 1) set torch.backends as easyinv's cudaSettings are."""
import argparse
import json
import os
import statistics
import sys
import time

import torch


def graphed(unet, shape, dtype, device, cond, extra):
    """The UNet call as PyTorch's CUDA-graphs recipe makes it: warm-up on a side stream, capture once, then copy the
    inputs into the static ones and replay. The output is overwritten by the next replay; the loop uses it first."""
    latents = torch.zeros(shape, dtype=dtype, device=device)
    timesteps = torch.zeros(shape[0], dtype=torch.int64, device=device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            unet(latents, timesteps, cond, *extra)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = unet(latents, timesteps, cond, *extra)

    def replay(x, t, *_):
        latents.copy_(x)
        timesteps.copy_(t)
        graph.replay()
        return output
    return replay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--matmul-tf32", type=int, choices=[0, 1])
    parser.add_argument("--convolution-tf32", type=int, choices=[0, 1])
    parser.add_argument("--cudnn-benchmark", type=int, choices=[0, 1])
    args = parser.parse_args()
    if args.matmul_tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = bool(args.matmul_tf32)
    if args.convolution_tf32 is not None:
        torch.backends.cudnn.allow_tf32 = bool(args.convolution_tf32)
    if args.cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    with open(os.path.join(args.bundle, "manifest.json")) as file:
        manifest = json.load(file)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    def load(role):
        path = os.path.join(args.bundle, manifest["files"][role])
        if path.endswith(".pt2"):  # compiled for its device and dtype
            return torch._inductor.aoti_load_package(path)
        return torch.jit.load(path, map_location=device).to(dtype).eval()

    unet = load("unet")
    config = manifest["scheduler"]
    betas = torch.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"],
                           dtype=torch.float64) ** 2 if config["beta_schedule"] == "scaled_linear" else \
        torch.linspace(config["beta_start"], config["beta_end"], config["num_train_timesteps"], dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).tolist()
    final = 1.0 if config["set_alpha_to_one"] else alpha_bar[0]
    delta = config["num_train_timesteps"] // args.steps
    timesteps = [i * delta + config["steps_offset"] for i in range(args.steps)]  # 'leading', ascending
    batch, size, channels = args.batch, manifest["latent"]["size"], manifest["latent"]["channels"]

    with torch.inference_mode():
        ids = torch.full((1, 77), 49407, dtype=torch.int64, device=device)
        ids[0, 0] = 49406
        sdxl = manifest["family"] == "sdxl"
        if "text_encoder" not in manifest["files"]:  # a UNet-only bundle: zeros, as easyinv encodes '' there
            cond = torch.zeros(1, *manifest["cond_shape"], dtype=dtype, device=device)
            pooled = torch.zeros(1, manifest.get("pooled_dim", 1280), dtype=dtype, device=device)
        elif sdxl:
            first = load("text_encoder")(ids)
            second, pooled = load("text_encoder_2")(ids)
            cond = torch.cat([first, second], -1)
        else:
            cond = load("text_encoder")(ids)
        extra = []
        if sdxl:
            side = manifest["resolution"]
            extra = [pooled.repeat(batch, 1), torch.tensor([[side, side, 0, 0, side, side]] * batch, dtype=dtype, device=device)]
        guided = args.guidance != 1
        rows = 2 * batch if guided else batch  # guidance: one call on [uncond; cond], as easyinv makes it
        cond = cond.repeat(rows, 1, 1)
        extra = [e.repeat(2, 1) for e in extra] if guided else extra
        if manifest.get("mutual_attention_layers"):  # the identity: every row attends to itself, the plain UNet
            extra.append(torch.arange(rows, device=device)[:, None].repeat(1, manifest["mutual_attention_layers"]))
        z0 = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        noise = unet if not args.cuda_graphs else graphed(unet, (rows, channels, size, size), dtype, device, cond, extra)

        def invert() -> torch.Tensor:
            z = z0
            for t in timesteps:
                a_from, a_to = (alpha_bar[t - delta] if t - delta >= 0 else final), alpha_bar[t]
                x = torch.cat([z, z]) if guided else z
                eps = noise(x, torch.full((rows,), t, dtype=torch.int64, device=device), cond, *extra)
                if guided:
                    uncond, conditioned = eps.chunk(2)
                    eps = uncond + args.guidance * (conditioned - uncond)
                scale = (a_to / a_from) ** 0.5
                z = scale * z + ((1 - a_to) ** 0.5 - scale * (1 - a_from) ** 0.5) * eps
            return z

        def timed() -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            invert()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        timed()  # warm-up: the TorchScript profiling runs
        if args.serve:
            print(json.dumps({"ready": True, "torch": torch.__version__}), flush=True)
            for _ in sys.stdin:
                print(json.dumps({"seconds": timed()}), flush=True)
            return
        seconds = statistics.median(timed() for _ in range(args.repeats))
    print(json.dumps({"secondsPerInversion": seconds, "batch": batch, "steps": args.steps, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
