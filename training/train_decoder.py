#!/usr/bin/env python3
"""Stage 2 of the VAE: the encoder frozen (the latents the UNet is trained on stay fixed), the decoder alone trained
on, as Stable Diffusion's decoder fine-tunes were. L1 loss on random crops, Adam, warmup and cosine decay. Can run
beside training/train_unet.py (which only needs the frozen encoder).

    nice -n 19 /usr/bin/python3 training/train_decoder.py [--steps 3000] [--seed 0] [--vae /tmp/tiny-sd/vae.pt]

Writes --out (the encoder unchanged, the decoder trained on), training/logs/decoder_loss.csv and decoder_eval.csv.
"""
import argparse
import csv
import math
import os
import random
import time

import numpy as np
import torch

from data import evaluation_images, pyramid, random_crops, start_run
from models import VaeDecoder, VaeEncoder
from train_vae import evaluate

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--pixels", type=int, default=8 * 96 * 96, help="pixels per batch")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vae", default="/tmp/tiny-sd/vae.pt")
    parser.add_argument("--out", default="/tmp/tiny-sd/vae_final.pt")
    parser.add_argument("--logs", default=os.path.join(HERE, "logs"))
    args = parser.parse_args()

    start_run(args.seed, args.threads)
    rng = random.Random(args.seed + 100)
    levels = pyramid()
    images = evaluation_images()
    checkpoint = torch.load(args.vae)
    encoder, decoder = VaeEncoder(), VaeDecoder()
    encoder.load_state_dict(checkpoint["encoder"]), decoder.load_state_dict(checkpoint["decoder"])
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.lr)
    loss_file = open(os.path.join(args.logs, "decoder_loss.csv"), "w", newline="")
    eval_file = open(os.path.join(args.logs, "decoder_eval.csv"), "w", newline="")
    loss_log, eval_log = csv.writer(loss_file), csv.writer(eval_file)
    loss_log.writerow(["step", "loss_l1", "psnr_batch", "lr", "seconds"])
    eval_log.writerow(["step"] + [f"psnr_{name}" for name in images])
    scores = evaluate(encoder, decoder, images)
    eval_log.writerow([0] + [f"{scores[n]:.3f}" for n in images]), eval_file.flush()
    print(f"stage 1 (step {checkpoint['step']}): " + " ".join(f"{n} {v:.2f}" for n, v in scores.items()), flush=True)
    start, running = time.time(), []
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / args.warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        size = rng.choice([64, 80, 96, 112, 128])
        x = torch.from_numpy(random_crops(levels, size, max(2, args.pixels // (size * size)), rng))
        with torch.no_grad():
            latent = encoder(x)
        y = decoder(latent)
        loss = (y - x).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        mse = (y.detach().clamp(-1, 1) - x).pow(2).mean().item() / 4
        loss_log.writerow([step, f"{loss.item():.5f}", f"{10 * math.log10(1 / mse):.3f}", f"{lr:.6f}",
                           f"{time.time() - start:.1f}"])
        running.append(loss.item())
        if step % 20 == 0:
            loss_file.flush()
            print(f"step {step} loss {np.mean(running):.5f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True)
            running = []
        if step % args.eval_every == 0 or step == args.steps:
            scores = evaluate(encoder, decoder, images)
            eval_log.writerow([step] + [f"{scores[n]:.3f}" for n in images]), eval_file.flush()
            print("  eval psnr " + " ".join(f"{n} {v:.2f}" for n, v in scores.items()), flush=True)
            torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(), "step": step,
                        "stage1_step": checkpoint["step"], "seed": args.seed}, args.out)
    print(f"done in {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
