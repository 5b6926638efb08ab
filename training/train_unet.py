#!/usr/bin/env python3
"""Trains the tiny SD-V1-like UNet (training/models.py: UNet) for epsilon prediction, DDPM with SD's scaled_linear
schedule (beta 0.00085..0.012, 1000 steps), on the scaled latents of the training photos.

1. Latents: --views random 256x256 views of the training photos (training/data.py: random_views) are encoded once
   by the trained encoder (--vae); scaling_factor = 1 / std of those latents (as SD's 0.18215 was chosen), so that
   scaled latents have unit variance. Cached in --cache with the scaling factor.
2. Text: a small CLIP-like text encoder with seeded random, frozen weights (models.TextEncoder, --text-seed) encodes
   one caption per photo ("a photo of a cat", ...) and the empty prompt; each training sample is conditioned on its
   photo's caption or, with probability --drop (caption dropout, as SD's classifier-free training), the empty prompt.
3. UNet: AdamW, warmup then cosine decay, an EMA of the weights (the exported ones), uniform timesteps, MSE on eps.

    nice -n 19 /usr/bin/python3 training/train_unet.py [--steps 1000] [--seed 0]

Logs: training/logs/unet_loss.csv (step, loss, lr, seconds) and training/logs/unet_eval.csv (held-out loss of the
EMA weights at fixed noise, and a DDIM inversion + reconstruction at N = 50 of the demo's photo's latent, as PSNR
of the decoded images).
"""
import argparse
import csv
import json
import math
import os
import random
import time

import numpy as np
import torch

from data import HELD_OUT, TRAIN, evaluation_images, psnr, random_views, start_run
from models import TextEncoder, UNet, VaeDecoder, VaeEncoder, count

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CAPTIONS = {
    "coffee": "a cup of coffee", "chelsea": "a cat", "camera": "a man with a camera",
    "immunohistochemistry": "stained tissue under a microscope", "retina": "a human retina",
    "colorwheel": "a colour wheel", "stereo_motorcycle": "a motorcycle", "brick": "a brick wall",
    "grass": "grass", "gravel": "gravel", "coins": "old coins", "moon": "the surface of the moon",
    "clock": "a clock", "horse": "the silhouette of a horse",
}


def prompt_ids(prompts):
    """CLIP BPE ids [len(prompts), 77] from training/captions.json: the ids the project's tokenizer
    (weights/clip/tokenizer.json) gives each caption up to its end-of-text token, padded with end-of-text (49407)."""
    with open(os.path.join(HERE, "captions.json")) as file:
        table = json.load(file)
    rows = [table["ids"][p] + [table["pad"]] * (table["length"] - len(table["ids"][p])) for p in prompts]
    return torch.tensor(rows, dtype=torch.int64)


def alpha_bars() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


def encode_views(encoder, names, count_, seed, chunk=50):
    rng = random.Random(seed)
    latents, photos = [], []
    with torch.no_grad():
        for start in range(0, count_, chunk):
            views, which = random_views(names, min(chunk, count_ - start), rng)
            latents.append(encoder(torch.from_numpy(views)))
            photos += which
    return torch.cat(latents), torch.tensor(photos)


def ddim_roundtrip(unet, latent, context, abar, steps=50):
    """DDIM inversion then DDIM sampling at N steps (SPEC section 4, 'leading' + offset 1): the reconstructed latent."""
    delta = 1000 // steps
    timesteps = [i * delta + 1 for i in range(steps)]
    z = latent.clone()
    with torch.no_grad():
        for t in timesteps:  # inversion, ascending
            s = t - delta
            a_s = abar[s] if s >= 0 else abar[0]
            eps = unet(z, torch.tensor([t]), context)
            x0 = (z - (1 - a_s).sqrt() * eps) / a_s.sqrt()
            z = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * eps
        for t in reversed(timesteps):  # sampling, descending
            p = t - delta
            a_p = abar[p] if p >= 0 else abar[0]
            eps = unet(z, torch.tensor([t]), context)
            x0 = (z - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            z = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
    return z


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--drop", type=float, default=0.5)
    parser.add_argument("--views", type=int, default=2000)
    parser.add_argument("--held-out-views", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--stop-at", type=int, default=0,
                        help="stop after this step (the schedule still runs over --steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae", default="/tmp/tiny-sd/vae.pt")
    parser.add_argument("--cache", default="/tmp/tiny-sd/latents.pt")
    parser.add_argument("--out", default="/tmp/tiny-sd/unet.pt")
    parser.add_argument("--logs", default=os.path.join(HERE, "logs"))
    args = parser.parse_args()

    start_run(args.seed, args.threads)
    vae = torch.load(args.vae)
    encoder, decoder = VaeEncoder().eval(), VaeDecoder().eval()
    encoder.load_state_dict(vae["encoder"]), decoder.load_state_dict(vae["decoder"])
    start = time.time()
    if os.path.exists(args.cache):
        cache = torch.load(args.cache)
        print(f"latents from {args.cache}", flush=True)
    else:
        train, photos = encode_views(encoder, TRAIN, args.views, args.seed)
        cache = {"train": train, "photos": photos, "held_out": encode_views(encoder, HELD_OUT, args.held_out_views, args.seed + 1)[0]}
        cache["scaling_factor"] = float(1.0 / train.std())
        cache["mean"] = float(train.mean())
        torch.save(cache, args.cache)
        print(f"encoded {len(train)} views in {time.time() - start:.0f}s", flush=True)
    scale = cache["scaling_factor"]
    train, held_out = cache["train"] * scale, cache["held_out"] * scale
    print(f"scaling_factor {scale:.5f} (latent mean {cache['mean']:.4f}); scaled latents: train std "
          f"{train.std():.4f}, held-out std {held_out.std():.4f}", flush=True)

    photo_of_view = cache["photos"]  # index in TRAIN of each view's photo: its caption
    torch.manual_seed(args.text_seed)
    text_encoder = TextEncoder().eval()
    prompts = [""] + [CAPTIONS[name] for name in TRAIN]
    with torch.no_grad():
        states = text_encoder(prompt_ids(prompts))  # [1 + len(TRAIN), 77, 64]
    empty = states[:1]
    torch.manual_seed(args.seed)

    unet = UNet()
    ema = UNet()
    ema.load_state_dict(unet.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    print(f"unet {count(unet)} parameters, text encoder {count(text_encoder)}", flush=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    abar = alpha_bars()
    images = evaluation_images()
    with torch.no_grad():
        eval_latents = {n: encoder(torch.from_numpy(images[n])[None]) * scale for n in ["astronaut", "rocket"]}
    g = torch.Generator().manual_seed(1234)
    fixed_t = torch.randint(0, 1000, (len(held_out),), generator=g)
    fixed_noise = torch.randn(held_out.shape, generator=g)

    os.makedirs(args.logs, exist_ok=True)
    loss_file = open(os.path.join(args.logs, "unet_loss.csv"), "w", newline="")
    eval_file = open(os.path.join(args.logs, "unet_eval.csv"), "w", newline="")
    loss_log, eval_log = csv.writer(loss_file), csv.writer(eval_file)
    loss_log.writerow(["step", "loss", "lr", "seconds"])
    eval_log.writerow(["step", "heldout_loss_ema", "train_loss_ema", "ddim50_psnr_astronaut", "ddim50_psnr_rocket"])
    start, running = time.time(), []
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = torch.randint(0, len(train), (args.batch,))
        x0 = train[index]
        dropped = torch.rand(args.batch) < args.drop
        context = torch.where(dropped[:, None, None], empty, states[1 + photo_of_view[index]])
        t = torch.randint(0, 1000, (args.batch,))
        noise = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        loss = (unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, context) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        loss_log.writerow([step, f"{loss.item():.5f}", f"{lr:.6f}", f"{time.time() - start:.1f}"])
        running.append(loss.item())
        if step % 50 == 0:
            loss_file.flush()
            print(f"step {step} loss {np.mean(running):.5f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
            running = []
        if step % args.eval_every == 0 or step in (args.steps, args.stop_at):
            row = evaluate(ema, held_out, train, fixed_t, fixed_noise, abar, empty, eval_latents, decoder, scale,
                           images)
            eval_log.writerow([step] + [f"{v:.4f}" for v in row]), eval_file.flush()
            print("  eval (ema): held-out loss {:.4f} train loss {:.4f} ddim50 psnr astronaut {:.2f} rocket {:.2f}"
                  .format(*row), flush=True)
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "step": step, "seed": args.seed,
                        "text_seed": args.text_seed, "scaling_factor": scale}, args.out)
        if step == args.stop_at:
            break
    print(f"done in {time.time() - start:.0f}s", flush=True)


def evaluate(ema, held_out, train, fixed_t, fixed_noise, abar, empty, eval_latents, decoder, scale, images):
    with torch.no_grad():
        def loss_on(x0, t, noise):
            losses = []
            for i in range(0, len(x0), 50):
                a = abar[t[i:i + 50]][:, None, None, None]
                context = empty.expand(len(x0[i:i + 50]), -1, -1)
                xt = a.sqrt() * x0[i:i + 50] + (1 - a).sqrt() * noise[i:i + 50]
                losses.append((ema(xt, t[i:i + 50], context) - noise[i:i + 50]).pow(2).mean(dim=(1, 2, 3)))
            return torch.cat(losses).mean().item()
        held = loss_on(held_out, fixed_t, fixed_noise)
        trained = loss_on(train[:len(held_out)], fixed_t, fixed_noise)
        scores = []
        for name, latent in eval_latents.items():
            z = ddim_roundtrip(ema, latent, empty, abar)
            scores.append(psnr(decoder(z / scale)[0].numpy(), images[name]))
    return [held, trained] + scores


if __name__ == "__main__":
    main()
