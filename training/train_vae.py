#!/usr/bin/env python3
"""Trains the tiny SD-V1-like autoencoder (training/models.py: VaeEncoder, VaeDecoder) on random crops of the
training photos (training/data.py), L1 loss, Adam with warmup and cosine decay. Fully convolutional: trained on
64..128 px crops, used at 256. Deterministic (no KL sampling): the encoder's output is the latent "mean".

    nice -n 19 /usr/bin/python3 training/train_vae.py [--steps 8000] [--seed 0] [--out /tmp/tiny-sd/vae.pt]

Prints and writes the loss curve to training/logs/vae_loss.csv (step, loss, lr, seconds) and the PSNR of the
demo's and the held-out photos at 256x256 every --eval-every steps to training/logs/vae_eval.csv.

A diagnostic, never used for the bundle: `--only-demo-photo` trains on crops of the demo's photo itself (fitted to
256x256 like the demo), and `--width-scale` widens every layer, to bound what the architecture (or a wider one) can
reach on that photo at all when it has seen nothing else.

    nice -n 19 /usr/bin/python3 training/train_vae.py --only-demo-photo --steps 3000 --width-scale 2 \
        --out /tmp/tiny-sd/ceiling.pt --logs /tmp/tiny-sd/ceiling_logs
"""
import argparse
import csv
import math
import os
import random
import time

import numpy as np
import torch

from data import evaluation_images, psnr, pyramid, random_crops, start_run
from models import VaeDecoder, VaeEncoder, count

HERE = os.path.dirname(os.path.abspath(__file__))


def evaluate(encoder, decoder, images):
    encoder.eval(), decoder.eval()
    with torch.no_grad():
        scores = {}
        for name, image in images.items():
            x = torch.from_numpy(image)[None]
            scores[name] = psnr(decoder(encoder(x))[0].numpy(), image)
    encoder.train(), decoder.train()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--pixels", type=int, default=8 * 96 * 96, help="pixels per batch")
    parser.add_argument("--stop-at", type=int, default=0,
                        help="stop after this step (the schedule still runs over --steps): stage 1 of the VAE")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only-demo-photo", action="store_true",
                        help="diagnostic: train on the demo's photo alone (256x256), never for the bundle")
    parser.add_argument("--width-scale", type=float, default=1.0, help="diagnostic: every layer's width times this")
    parser.add_argument("--out", default="/tmp/tiny-sd/vae.pt")
    parser.add_argument("--logs", default=os.path.join(HERE, "logs"))
    args = parser.parse_args()

    start_run(args.seed, args.threads)
    rng = random.Random(args.seed)
    images = evaluation_images()
    levels = {"astronaut": [images["astronaut"]]} if args.only_demo_photo else pyramid()
    encoder = VaeEncoder([round(w * args.width_scale) for w in VaeEncoder.WIDTHS])
    decoder = VaeDecoder([round(w * args.width_scale) for w in VaeDecoder.WIDTHS])
    print(f"encoder {count(encoder)} parameters, decoder {count(decoder)}", flush=True)
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=args.lr)
    os.makedirs(args.logs, exist_ok=True), os.makedirs(os.path.dirname(args.out), exist_ok=True)
    loss_file = open(os.path.join(args.logs, "vae_loss.csv"), "w", newline="")
    eval_file = open(os.path.join(args.logs, "vae_eval.csv"), "w", newline="")
    loss_log, eval_log = csv.writer(loss_file), csv.writer(eval_file)
    loss_log.writerow(["step", "loss_l1", "psnr_batch", "lr", "seconds"])
    eval_log.writerow(["step"] + [f"psnr_{name}" for name in images])
    start, running = time.time(), []
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        size = rng.choice([64, 80, 96, 112, 128])
        x = torch.from_numpy(random_crops(levels, size, max(2, args.pixels // (size * size)), rng))
        latent = encoder(x)
        y = decoder(latent)
        loss = (y - x).abs().mean() + 1e-6 * latent.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        mse = (y.detach().clamp(-1, 1) - x).pow(2).mean().item() / 4  # in [0,1] units
        loss_log.writerow([step, f"{loss.item():.5f}", f"{10 * math.log10(1 / mse):.3f}", f"{lr:.6f}",
                           f"{time.time() - start:.1f}"])
        running.append(loss.item())
        if step % 20 == 0:
            loss_file.flush()
            print(f"step {step} loss {np.mean(running):.5f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
            running = []
        if step % args.eval_every == 0 or step in (args.steps, args.stop_at):
            scores = evaluate(encoder, decoder, images)
            eval_log.writerow([step] + [f"{scores[n]:.3f}" for n in images]), eval_file.flush()
            print("  eval psnr " + " ".join(f"{n} {v:.2f}" for n, v in scores.items()), flush=True)
            torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(), "step": step,
                        "seed": args.seed}, args.out)
        if step == args.stop_at:
            break
    print(f"done in {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
