"""The networks of weights/tiny-sd1-256, with the interfaces of SPEC section 3 (as weights/make_test_bundles.py's):

- VaeEncoder: image [B,3,H,W] in [-1,1] -> unscaled latent [B,4,H/8,W/8] (deterministic: the "mean");
- VaeDecoder: unscaled latent [B,4,h,w] -> image in [-1,1] (not clamped; the library clamps);
- UNet: (sample [B,4,h,w], timestep int64 [B], encoder_hidden_states [B,77,D][, attention_sources int64 [B,5]])
  -> eps [B,4,h,w]; attention_sources: mutual self-attention (MasaCtrl), row r's self-attention in layer l taking its
  keys and values from row attention_sources[r, l] (absent, or the identity: the plain UNet);
- TextEncoder: ids int64 [B,77] -> last hidden state [B,77,D], CLIP-like (causal pre-LN layers, final LayerNorm,
  an int64 position_ids buffer).

Only PyTorch 1.13 APIs (attention written by hand), so that TorchScript files written by Debian's python3-torch load
on every supported LibTorch.
"""
import math
from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F

TEXT_VOCAB = 1024  # token ids are hashed into a small table (the encoder is small and frozen)
CONTEXT = 64       # text width = the UNet's cross-attention context (cond_shape [77, 64])
ATTENTION_LAYERS = 5  # the UNet's self-attention layers (its attention_sources' second dimension)


# ---------------------------------------------------------------- VAE (a plain, normalisation-free autoencoder)
class VaeResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class VaeEncoder(nn.Module):
    """256 -> 128 (space-to-depth) -> 64 -> 32, 8x in all; 4 latent channels."""
    WIDTHS = [32, 64, 96]

    def __init__(self, widths: List[int] = WIDTHS):
        super().__init__()
        self.conv_in = nn.Conv2d(12, widths[0], 3, padding=1)
        self.res0 = VaeResBlock(widths[0])
        self.down1 = nn.Conv2d(widths[0], widths[1], 3, stride=2, padding=1)
        self.res1 = VaeResBlock(widths[1])
        self.down2 = nn.Conv2d(widths[1], widths[2], 3, stride=2, padding=1)
        self.res2 = VaeResBlock(widths[2])
        self.conv_out = nn.Conv2d(widths[2], 4, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.res0(self.conv_in(F.pixel_unshuffle(image, 2)))
        h = self.res1(self.down1(h))
        h = self.res2(self.down2(h))
        return self.conv_out(F.silu(h))


class VaeDecoder(nn.Module):
    """32 -> 64 -> 128 -> 256 (depth-to-space), nearest-neighbour upsampling and convolutions."""
    WIDTHS = [128, 96, 48]

    def __init__(self, widths: List[int] = WIDTHS):
        super().__init__()
        self.conv_in = nn.Conv2d(4, widths[0], 3, padding=1)
        self.res0a, self.res0b = VaeResBlock(widths[0]), VaeResBlock(widths[0])
        self.up1 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.res1a = VaeResBlock(widths[1])
        self.up2 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.res2a, self.res2b = VaeResBlock(widths[2]), VaeResBlock(widths[2])
        self.conv_out = nn.Conv2d(widths[2], 12, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.res0b(self.res0a(self.conv_in(latent)))
        h = self.res1a(self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest")))
        h = self.res2b(self.res2a(self.up2(F.interpolate(h, scale_factor=2.0, mode="nearest"))))
        return F.pixel_shuffle(self.conv_out(F.silu(h)), 2)


# ---------------------------------------------------------------- UNet (SD's block kinds, small widths)
def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """SD's ResnetBlock2D: GroupNorm, SiLU, conv, + timestep embedding, GroupNorm, SiLU, conv, 1x1 skip."""

    def __init__(self, cin: int, cout: int, embed: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(16, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(embed, cout)
        self.norm2, self.conv2 = nn.GroupNorm(16, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        with torch.no_grad():
            self.conv2.weight.zero_(), self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(F.silu(emb))[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Attention(nn.Module):
    def __init__(self, channels: int, context: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(channels, channels, bias=False)
        self.k = nn.Linear(context, channels, bias=False)
        self.v = nn.Linear(context, channels, bias=False)
        self.out = nn.Linear(channels, channels)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.heads, t.shape[2] // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(context)), self.split(self.v(context))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, c))


class Transformer(nn.Module):
    """SD's Transformer2DModel with one BasicTransformerBlock: GroupNorm, proj_in, self-attention, cross-attention
    over the text states, GEGLU feed-forward, proj_out, residual."""

    def __init__(self, channels: int, context: int, heads: int = 4, ff_mult: int = 1):
        super().__init__()
        self.norm_in, self.proj_in = nn.GroupNorm(16, channels), nn.Linear(channels, channels)
        self.norm1, self.self_attention = nn.LayerNorm(channels), Attention(channels, channels, heads)
        self.norm2, self.cross_attention = nn.LayerNorm(channels), Attention(channels, context, heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff_in, self.ff_out = nn.Linear(channels, 2 * ff_mult * channels), nn.Linear(ff_mult * channels, channels)
        self.proj_out = nn.Linear(channels, channels)
        with torch.no_grad():
            self.proj_out.weight.zero_(), self.proj_out.bias.zero_()

    def forward(self, x: torch.Tensor, context: torch.Tensor, sources: Optional[torch.Tensor], layer: int) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm_in(x).flatten(2).transpose(1, 2))
        normed = self.norm1(tokens)
        # the same values as normed for the identity sources, so the plain UNet's output is unchanged to the bit
        keys = normed if sources is None else normed.index_select(0, sources[:, layer])
        tokens = tokens + self.self_attention(normed, keys)
        tokens = tokens + self.cross_attention(self.norm2(tokens), context)
        value, gate = self.ff_in(self.norm3(tokens)).chunk(2, dim=-1)
        tokens = tokens + self.ff_out(value * F.gelu(gate))
        return x + self.proj_out(tokens).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """32x32x4 latents. Down: 48 @32 -> 80 @16 (+attention) -> 96 @8 (+attention); middle: res, attention, res;
    up: mirror with skip concatenations (SD's UNet2DConditionModel, one layer per level). Its 5 self-attention layers,
    in call order: down1, down2, mid, up2, up1 (ATTENTION_LAYERS)."""

    def __init__(self, context: int = CONTEXT, widths: List[int] = [48, 80, 96], time_dim: int = 64):
        super().__init__()
        c0, c1, c2 = widths
        embed = 2 * time_dim
        self.time_dim = time_dim
        self.time = nn.Sequential(nn.Linear(time_dim, embed), nn.SiLU(), nn.Linear(embed, embed))
        self.conv_in = nn.Conv2d(4, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, embed)
        self.downsample0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1, self.down1_attn = ResBlock(c0, c1, embed), Transformer(c1, context)
        self.downsample1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.down2, self.down2_attn = ResBlock(c1, c2, embed), Transformer(c2, context)
        self.mid1, self.mid_attn, self.mid2 = ResBlock(c2, c2, embed), Transformer(c2, context), ResBlock(c2, c2, embed)
        self.up2, self.up2_attn = ResBlock(c2 + c2, c2, embed), Transformer(c2, context)
        self.upsample2 = nn.Conv2d(c2, c2, 3, padding=1)
        self.up1, self.up1_attn = ResBlock(c2 + c1, c1, embed), Transformer(c1, context)
        self.upsample1 = nn.Conv2d(c1, c1, 3, padding=1)
        self.up0 = ResBlock(c1 + c0, c0, embed)
        self.norm_out, self.conv_out = nn.GroupNorm(16, c0), nn.Conv2d(c0, 4, 3, padding=1)
        with torch.no_grad():
            self.conv_out.weight.zero_(), self.conv_out.bias.zero_()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_sources: Optional[torch.Tensor] = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(timestep, self.time_dim).to(sample.dtype))
        context = encoder_hidden_states
        h0 = self.down0(self.conv_in(sample), emb)
        h1 = self.down1_attn(self.down1(self.downsample0(h0), emb), context, attention_sources, 0)
        h2 = self.down2_attn(self.down2(self.downsample1(h1), emb), context, attention_sources, 1)
        h = self.mid2(self.mid_attn(self.mid1(h2, emb), context, attention_sources, 2), emb)
        h = self.up2_attn(self.up2(torch.cat([h, h2], dim=1), emb), context, attention_sources, 3)
        h = self.upsample2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up1_attn(self.up1(torch.cat([h, h1], dim=1), emb), context, attention_sources, 4)
        h = self.upsample1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.up0(torch.cat([h, h0], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------- text encoder (CLIP-like, small, frozen random)
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
    """ids int64 [B,77] -> last_hidden_state [B,77,width]: token and position embeddings, causal layers, final
    LayerNorm; CLIP's int64 position_ids buffer (a dtype conversion must leave it alone)."""

    def __init__(self, width: int = CONTEXT, layers: int = 2, heads: int = 4):
        super().__init__()
        self.vocab = TEXT_VOCAB
        self.token, self.position = nn.Embedding(TEXT_VOCAB, width), nn.Embedding(77, width)
        nn.init.normal_(self.token.weight, std=0.5)
        nn.init.normal_(self.position.weight, std=0.05)
        self.register_buffer("position_ids", torch.arange(77).expand(1, -1), persistent=False)
        self.layers = nn.ModuleList([EncoderLayer(width, heads) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.token(ids % self.vocab) + self.position(self.position_ids[:, :n])
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1).to(x.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


if __name__ == "__main__":
    import time
    torch.set_num_threads(2)
    for name, m in [("vae_encoder", VaeEncoder()), ("vae_decoder", VaeDecoder()), ("unet", UNet()),
                    ("text_encoder", TextEncoder())]:
        print(name, count(m))
    enc, dec, unet = VaeEncoder(), VaeDecoder(), UNet()
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()))
    x = torch.randn(8, 3, 96, 96)
    for i in range(3):
        t0 = time.time(); loss = (dec(enc(x)) - x).abs().mean(); opt.zero_grad(); loss.backward(); opt.step()
        print("vae step b8x96", time.time() - t0)
    opt = torch.optim.Adam(unet.parameters())
    z, c = torch.randn(16, 4, 32, 32), torch.randn(16, 77, 64)
    for i in range(3):
        t0 = time.time(); loss = (unet(z, torch.randint(0, 1000, (16,)), c) - z).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
        print("unet step b16", time.time() - t0)
