#!/usr/bin/env python3
"""Reference values for the metrics: scikit-image's PSNR and SSIM (SPEC section 6 settings) between each photo in
weights/photos and degraded copies of it. The degradations are exact integer operations on the 8-bit pixels, so the
tests can make the same images. Writes test/fixtures/reference-metrics.json.
Run with Debian's packages: apt-get install python3-skimage; /usr/bin/python3 test/python/reference_metrics.py
"""
import json
import os

import numpy as np
from skimage.io import imread
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "test", "fixtures", "reference-metrics.json")


def degrade(pixels: np.ndarray, kind: str) -> np.ndarray:
    """pixels: uint8 [H, W, 3]. Each kind is repeated exactly in test/metrics.test.ts."""
    if kind == "bits4":
        return pixels & 0xF0
    if kind == "shift2":
        return np.roll(pixels, 2, axis=1)
    if kind == "pattern":
        h, w, c = pixels.shape
        index = np.arange(h * w * c, dtype=np.int64).reshape(h, w, c)
        return (pixels.astype(np.int64) ^ ((index * 7919) % 64)).astype(np.uint8)
    raise ValueError(kind)


def main() -> None:
    fixture = {}
    for name in ("astronaut", "coffee", "chelsea"):
        pixels = imread(os.path.join(REPO, "weights", "photos", f"{name}.png"))[..., :3]
        original = pixels.astype(np.float64) / 255
        for kind in ("bits4", "shift2", "pattern"):
            degraded = degrade(pixels, kind).astype(np.float64) / 255
            fixture[f"{name}/{kind}"] = {
                "psnr": peak_signal_noise_ratio(original, degraded, data_range=1),
                "ssim": structural_similarity(original, degraded, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1, channel_axis=2),
            }
    with open(OUT, "w") as file:
        json.dump(fixture, file, indent=1)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
