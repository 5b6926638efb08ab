"""Training photos: scikit-image's bundled sample photos (Debian: apt-get install python3-skimage), never the demo's
astronaut. Grey photos become RGB; images are float32 arrays in [-1, 1], [3, H, W].

Augmentation: each photo is kept at several scales (antialiased Lanczos downscales, short side 160..512 px, never
upscaled), from which random crops with random horizontal flips are cut.
"""
import os
import random
from typing import Dict, List

import numpy as np
import torch
from PIL import Image
import skimage.data

TRAIN = ["coffee", "chelsea", "camera", "immunohistochemistry", "retina", "colorwheel", "stereo_motorcycle",
         "brick", "grass", "gravel", "coins", "moon", "clock", "horse"]
# skimage.data.cat() is the same photo as chelsea(), so it is not listed twice.
HELD_OUT = ["rocket", "hubble_deep_field", "cell", "page"]  # never trained on; "astronaut" neither (the demo's photo)
SCALES = [160, 224, 256, 320, 400, 512]  # short sides of the kept downscales (plus the original if <= 600)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASTRONAUT = os.path.join(REPO, "weights", "photos", "astronaut.png")


def load_photo(name: str) -> Image.Image:
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity); the left view only
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return Image.fromarray(image[..., :3].astype(np.uint8))


def to_array(image: Image.Image) -> np.ndarray:
    return (np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0).copy()


def resize_short(image: Image.Image, short: int) -> Image.Image:
    w, h = image.size
    scale = short / min(w, h)
    return image.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.LANCZOS)


def fit_cover(image: Image.Image, side: int = 256) -> Image.Image:
    """Shorter side to `side`, then the centre square (how the demo fits a photo)."""
    image = resize_short(image, side)
    w, h = image.size
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def pyramid(names: List[str] = TRAIN) -> Dict[str, List[np.ndarray]]:
    levels = {}
    for name in names:
        photo = load_photo(name)
        short = min(photo.size)
        sizes = [s for s in SCALES if s < short] + ([short] if short <= 600 else [])
        levels[name] = [to_array(resize_short(photo, s)) for s in sizes]
    return levels


def random_crops(levels: Dict[str, List[np.ndarray]], size: int, count: int, rng: random.Random) -> np.ndarray:
    names = sorted(levels)
    out = np.empty((count, 3, size, size), dtype=np.float32)
    for i in range(count):
        level = rng.choice(levels[rng.choice(names)])
        _, h, w = level.shape
        top, left = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        crop = level[:, top:top + size, left:left + size]
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        if rng.random() < 0.3:  # colour variety: few of the photos are in colour
            crop = crop[rng.sample(range(3), 3)]
        out[i] = crop
    return out


def random_views(names: List[str], count: int, rng: random.Random, side: int = 256):
    """count random side x side views: a photo, its short side scaled to 256..512 (a quarter of the views: the
    whole photo at 256, as the demo fits it), a random crop, a random flip. Returns (views, index of each view's
    photo in names)."""
    photos = {name: load_photo(name) for name in names}
    out = np.empty((count, 3, side, side), dtype=np.float32)
    which = []
    for i in range(count):
        which.append(rng.randrange(len(names)))
        photo = photos[names[which[-1]]]
        short = min(photo.size)
        target = side if rng.random() < 0.25 else rng.randint(side, max(side, min(short, 2 * side)))
        image = to_array(resize_short(photo, target))
        _, h, w = image.shape
        top, left = rng.randrange(h - side + 1), rng.randrange(w - side + 1)
        crop = image[:, top:top + side, left:left + side]
        out[i] = crop[:, :, ::-1] if rng.random() < 0.5 else crop
    return out, which


def evaluation_images() -> Dict[str, np.ndarray]:
    """The demo's photo and the held-out photos, fitted to 256x256 like the demo does."""
    images = {"astronaut": to_array(fit_cover(Image.open(ASTRONAUT).convert("RGB")))}
    for name in HELD_OUT:
        images[name] = to_array(fit_cover(load_photo(name)))
    return images


def psnr(reconstruction: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of images in [-1,1], after 8-bit quantisation of both (SPEC section 6)."""
    q = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5) / 255.0
    mse = float(np.mean((q(reconstruction) - q(reference)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


if __name__ == "__main__":
    levels = pyramid()
    for name, ls in levels.items():
        print(name, [l.shape[1:] for l in ls])
    for name, image in evaluation_images().items():
        print("eval", name, image.shape)


def start_run(seed: int, threads: int) -> None:
    """Every training script's start: its CPU threads, and the seeds of Python's, numpy's and torch's generators."""
    torch.set_num_threads(threads)
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
