#!/usr/bin/env python3
"""Writes the small Stable Diffusion bundles the tests and the demo use: weights/test-sd1 and weights/test-sdxl.

They have the real signatures (SPEC section 3) and the real kinds of layers with small widths: a UNet with a
timestep embedding, residual blocks with GroupNorm, self- and cross-attention over the text condition, a down and an
up path with a skip (SDXL: plus the pooled text embedding and time_ids); a VAE whose encoder halves the side three
times and whose decoder doubles it three times; CLIP-like text encoders with 77 positions, causal self-attention,
final LayerNorm (SDXL: two encoders, penultimate states, pooled projection at the end-of-text token), and CLIP's
int64 position_ids buffer.

The UNet and text encoders have seeded random weights. The VAE's convolutions get designed weights instead (2x2
averaging down, nearest-neighbour up, a colour map in and out), so that decode(encode(image)) is a faithful, blurred
image and the demo's pictures mean something. Run with Debian's python3-torch (1.13):
    /usr/bin/python3 test/python/make_test_bundles.py
"""
import json
import math
import os
import sys
from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(REPO, "weights")
sys.path.insert(0, os.path.join(REPO, "tools"))

from torchscript_file import save_without_sources  # noqa: E402
SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1, "set_alpha_to_one": False, "timestep_spacing": "leading"}
VOCAB = 4096  # token ids are hashed into a small table to keep the files small


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    def __init__(self, channels: int, embed: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Linear(embed, channels)
        self.norm2, self.conv2 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(emb))[:, :, None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class Attention(nn.Module):
    def __init__(self, channels: int, context: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(channels, channels, bias=False), nn.Linear(context, channels, bias=False), \
            nn.Linear(context, channels, bias=False)
        self.out = nn.Linear(channels, channels)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.heads, t.shape[2] // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(context)), self.split(self.v(context))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, c))


class Transformer(nn.Module):
    """Self-attention, cross-attention over the text states, feed-forward: SD's BasicTransformerBlock."""

    def __init__(self, channels: int, context: int):
        super().__init__()
        self.norm_in = nn.GroupNorm(8, channels)
        self.norm1, self.self_attention = nn.LayerNorm(channels), Attention(channels, channels)
        self.norm2, self.cross_attention = nn.LayerNorm(channels), Attention(channels, context)
        self.norm3, self.ff = nn.LayerNorm(channels), nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(),
                                                                    nn.Linear(4 * channels, channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm_in(x).flatten(2).transpose(1, 2)
        normed = self.norm1(tokens)
        tokens = tokens + self.self_attention(normed, normed)
        tokens = tokens + self.cross_attention(self.norm2(tokens), context)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + tokens.transpose(1, 2).reshape(b, c, h, w)


def alpha_bars() -> torch.Tensor:
    betas = torch.linspace(SCHEDULER["beta_start"] ** 0.5, SCHEDULER["beta_end"] ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0).float()


class UNetCore(nn.Module):
    """The network's output is added, scaled down, to the exact noise predictor of latents ~ N(0, s^2 I): with random
    weights alone a UNet is no denoiser at all, and inversion on it would mean nothing."""

    def __init__(self, context: int, channels: int = 32, data_std: float = 0.5, network_scale: float = 0.2):
        super().__init__()
        self.channels, self.data_variance, self.network_scale = channels, data_std ** 2, network_scale
        self.register_buffer("alpha_bar", alpha_bars())
        self.time = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, 4 * channels))
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.res_in = ResBlock(channels, 4 * channels)
        self.down = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.res_mid, self.attn_mid = ResBlock(channels, 4 * channels), Transformer(channels, context)
        self.up = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_out = ResBlock(channels, 4 * channels)
        self.skip = nn.Conv2d(2 * channels, channels, 1)
        self.norm_out, self.conv_out = nn.GroupNorm(8, channels), nn.Conv2d(channels, 4, 3, padding=1)

    def run(self, sample: torch.Tensor, timestep: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[timestep].to(sample.dtype)[:, None, None, None]
        exact = torch.sqrt(1 - a) * sample / (a * self.data_variance + 1 - a)
        return exact + self.network_scale * self.network(sample, emb, context)

    def network(self, sample: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.res_in(self.conv_in(sample), emb)
        skip = h
        h = self.attn_mid(self.res_mid(self.down(h), emb), context)
        h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.res_out(self.skip(torch.cat([h, skip], dim=1)), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class UNetSD1(UNetCore):
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.channels).to(sample.dtype))
        return self.run(sample, timestep, emb, encoder_hidden_states)


class UNetSDXL(UNetCore):
    def __init__(self, context: int, pooled: int, channels: int = 32, time_id_dim: int = 8):
        super().__init__(context, channels)
        self.time_id_dim = time_id_dim
        self.add_embedding = nn.Sequential(nn.Linear(pooled + 6 * time_id_dim, 4 * channels), nn.SiLU(),
                                           nn.Linear(4 * channels, 4 * channels))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                text_embeds: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.channels).to(sample.dtype))
        ids = timestep_embedding(time_ids.flatten(), self.time_id_dim).reshape(time_ids.shape[0], -1).to(sample.dtype)
        emb = emb + self.add_embedding(torch.cat([text_embeds, ids], dim=1))
        return self.run(sample, timestep, emb, encoder_hidden_states)


class EncoderLayer(nn.Module):
    """CLIP's pre-LN layer: causal self-attention, then an MLP with quick_gelu."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.width, self.heads = width, heads
        self.norm1, self.qkv, self.out = nn.LayerNorm(width), nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.norm2, self.fc1, self.fc2 = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, self.width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.width // self.heads) + mask, dim=-1)
        x = x + self.out((weights @ v).transpose(1, 2).reshape(b, n, self.width))
        h = self.fc1(self.norm2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class TextEncoder(nn.Module):
    """CLIP-like: token and position embeddings, causal pre-LN transformer layers, final LayerNorm."""

    def __init__(self, width: int, layers: int = 2, heads: int = 2, projection: int = 0):
        super().__init__()
        self.vocab = VOCAB
        self.token, self.position = nn.Embedding(VOCAB, width), nn.Embedding(77, width)
        nn.init.normal_(self.position.weight, std=0.01)
        # As CLIP's: an int64 buffer, which a dtype conversion must leave alone (it indexes the embedding).
        self.register_buffer("position_ids", torch.arange(77).expand(1, -1), persistent=False)
        self.layers = nn.ModuleList([EncoderLayer(width, heads) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, max(projection, 1), bias=False)

    def hidden_states(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        n = ids.shape[1]
        x = self.token(ids % self.vocab) + self.position(self.position_ids[:, :n])
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1).to(x.dtype)
        penultimate = x
        for layer in self.layers:
            penultimate = x
            x = layer(x, mask)
        return penultimate, self.final_norm(x)


class TextEncoderLast(TextEncoder):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(ids)[1]


class TextEncoderPenultimate(TextEncoder):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(ids)[0]


class TextEncoderWithProjection(TextEncoder):
    def forward(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        penultimate, last = self.hidden_states(ids)
        end = ids.argmax(dim=1)  # the first end-of-text token has the highest id
        pooled = last[torch.arange(ids.shape[0], device=ids.device), end]
        return penultimate, self.projection(pooled)


# The VAE: the layer kinds of SD's AutoencoderKL (convolutions, GroupNorm-free for exactness), designed weights.
class VaeEncoder(nn.Module):
    def __init__(self, scaling_factor: float, channels: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.downs = nn.ModuleList([nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(3)])
        self.conv_out = nn.Conv2d(channels, 4, 1)
        with torch.no_grad():
            identity(self.conv_in)
            for down in self.downs:
                down.weight.zero_(), down.bias.zero_()
                for c in range(channels):
                    down.weight[c, c, 1:, 1:] = 0.25  # the 2x2 average under the stride-2 window
            # latent channels: R, G, B and their mean, scaled so that latent * scaling_factor is about the pixel value
            self.conv_out.weight.zero_(), self.conv_out.bias.zero_()
            for c in range(3):
                self.conv_out.weight[c, c] = 1 / scaling_factor
                self.conv_out.weight[3, c] = 1 / (3 * scaling_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image)
        for down in self.downs:
            h = down(h)
        return self.conv_out(h)


class VaeDecoder(nn.Module):
    def __init__(self, scaling_factor: float, channels: int = 8):
        super().__init__()
        self.conv_in = nn.Conv2d(4, channels, 1)
        self.ups = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in range(3)])
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        with torch.no_grad():
            self.conv_in.weight.zero_(), self.conv_in.bias.zero_()
            for c in range(3):
                self.conv_in.weight[c, c] = scaling_factor
            for up in self.ups:
                identity(up)
            identity(self.conv_out)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(latent)
        for up in self.ups:
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(h)


def identity(conv: nn.Conv2d) -> None:
    """A 3x3 convolution that passes the first min(in, out) channels through unchanged."""
    conv.weight.zero_(), conv.bias.zero_()
    for c in range(min(conv.in_channels, conv.out_channels)):
        conv.weight[c, c, 1, 1] = 1.0


def save(folder: str, name: str, module: nn.Module) -> str:
    save_without_sources(torch.jit.script(module.eval()), os.path.join(folder, name))
    return name


def write_bundle(name: str, family: str, resolution: int, scaling_factor: float, modules: dict, cond: int) -> None:
    folder = os.path.join(WEIGHTS, name)
    os.makedirs(folder, exist_ok=True)
    files = {role: save(folder, f"{role}.pt", module) for role, module in modules.items()}
    files["tokenizer"] = "clip-vit-large-patch14"  # the package's CLIP tokenizer (src/tokenizer.ts)
    if "text_encoder_2" in modules:
        files["tokenizer_2"] = "clip-vit-large-patch14"
    manifest = {
        "format": "easyinv-bundle/1", "family": family, "name": f"easyinv/{name}",
        "description": "small real-architecture test bundle: random UNet and text encoders, designed VAE",
        "device": "cpu", "dtype": "float32", "dtypes": ["float32", "float16"],  # scripted: float16 runs (on CUDA)
        "resolution": resolution,
        "latent": {"channels": 4, "size": resolution // 8, "scaling_factor": scaling_factor},
        "cond_shape": [77, cond], "scheduler": SCHEDULER, "files": files,
    }
    with open(os.path.join(folder, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote {folder} ({size // 1024} KiB)")


def main() -> None:
    torch.manual_seed(0)
    write_bundle("test-sd1", "sd1", 256, 0.18215, {
        "unet": UNetSD1(context=32),
        "vae_encoder": VaeEncoder(0.18215), "vae_decoder": VaeDecoder(0.18215),
        "text_encoder": TextEncoderLast(32),
    }, cond=32)
    write_bundle("test-sdxl", "sdxl", 128, 0.13025, {
        "unet": UNetSDXL(context=16 + 24, pooled=12),
        "vae_encoder": VaeEncoder(0.13025), "vae_decoder": VaeDecoder(0.13025),
        "text_encoder": TextEncoderPenultimate(16),
        "text_encoder_2": TextEncoderWithProjection(24, projection=12),
    }, cond=16 + 24)


if __name__ == "__main__":
    main()
