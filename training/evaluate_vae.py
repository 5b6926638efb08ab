#!/usr/bin/env python3
"""PSNR of decode(encode(x)) of the exported bundle's TorchScript VAE on the demo's photo and the held-out photos,
fitted to 256x256 like the demo (shorter side to 256, centre crop), 8-bit quantised (SPEC section 6); also the
scaled latents' std on each (about 1 on the training photos by construction of scaling_factor); and, for scale, the
PSNR of a 4x area downscale and bicubic upscale (3x64x64 numbers, three times the latent's 4x32x32).

    nice -n 19 /usr/bin/python3 training/evaluate_vae.py [--bundle weights/tiny-sd1-256]
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F

from data import TRAIN, evaluation_images, fit_cover, load_photo, psnr, to_array

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default=os.path.join(REPO, "weights", "tiny-sd1-256"))
    parser.add_argument("--training-photos", action="store_true", help="also the photos the VAE was trained on")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with open(os.path.join(args.bundle, "manifest.json")) as file:
        scale = json.load(file)["latent"]["scaling_factor"]
    encoder = torch.jit.load(os.path.join(args.bundle, "vae_encoder.pt"))
    decoder = torch.jit.load(os.path.join(args.bundle, "vae_decoder.pt"))
    images = evaluation_images()
    if args.training_photos:
        images.update({f"{name} (trained on)": to_array(fit_cover(load_photo(name))) for name in TRAIN})
    print("| photo | VAE PSNR (dB) | bicubic 4x PSNR (dB) | scaled latent std |\n|---|---|---|---|")
    with torch.no_grad():
        for name, image in images.items():
            x = torch.from_numpy(image)[None]
            latent = encoder(x)
            score = psnr(decoder(latent)[0].numpy(), image)
            bicubic = F.interpolate(F.interpolate(x, scale_factor=0.25, mode="area"), scale_factor=4.0, mode="bicubic")
            print(f"| {name} | {score:.2f} | {psnr(bicubic[0].numpy(), image):.2f} "
                  f"| {(latent * scale).std().item():.3f} |")


if __name__ == "__main__":
    main()
