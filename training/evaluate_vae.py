#!/usr/bin/env python3
"""PSNR of decode(encode(x)) of the exported bundle's TorchScript VAE on the demo's photo and the held-out photos,
fitted to 256x256 like the demo (shorter side to 256, centre crop), 8-bit quantised (SPEC section 6); also the
scaled latents' std on each (about 1 on the training photos by construction of scaling_factor).

    nice -n 19 /usr/bin/python3 training/evaluate_vae.py [--bundle weights/tiny-sd1-256]
"""
import argparse
import json
import os

import torch

from data import evaluation_images, psnr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default=os.path.join(REPO, "weights", "tiny-sd1-256"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    with open(os.path.join(args.bundle, "manifest.json")) as file:
        scale = json.load(file)["latent"]["scaling_factor"]
    encoder = torch.jit.load(os.path.join(args.bundle, "vae_encoder.pt"))
    decoder = torch.jit.load(os.path.join(args.bundle, "vae_decoder.pt"))
    print("| photo | VAE PSNR (dB) | scaled latent std |\n|---|---|---|")
    with torch.no_grad():
        for name, image in evaluation_images().items():
            latent = encoder(torch.from_numpy(image)[None])
            score = psnr(decoder(latent)[0].numpy(), image)
            print(f"| {name} | {score:.2f} | {(latent * scale).std().item():.3f} |")


if __name__ == "__main__":
    main()
