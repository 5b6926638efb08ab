#!/usr/bin/env python3
"""Full-size Stable Diffusion UNets (SD-1.x and SDXL-base) in plain PyTorch, random weights.

Used only to time the real models' cost on a GPU: the architectures (and therefore the FLOPs) are those of
diffusers' UNet2DConditionModel for CompVis/stable-diffusion-v1-4 and stabilityai/stable-diffusion-xl-base-1.0.
Modules are named as in diffusers, so the state_dict keys and shapes match exactly (diffusers' weights load
as they are). Needs only torch; diffusers is used by --check-against-diffusers when it is importable.

  python bench/gpu/fullsize_unet.py --family sd1 --device cuda --dtype float16 --latent 64 --batch 1 --out DIR
      writes DIR/unet.pt (torch.jit.trace at that batch and latent size) and DIR/manifest.json (easyinv-bundle/1)
  python bench/gpu/fullsize_unet.py --check-against-diffusers [--family sd1|sdxl|both] [--skip-output-check]
      compares parameter count, state_dict keys and shapes, and outputs (CPU, float32, small latent)
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# UNet2DConditionModel configs (the fields that matter here), as in the models' unet/config.json.
CONFIGS = {
    "sd1": dict(
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8, transformer_layers_per_block=1, cross_attention_dim=768,
        use_linear_projection=False, addition_embed_type=None, sample_size=64),
    "sdxl": dict(
        block_out_channels=(320, 640, 1280), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, sample_size=128),
}
EXPECTED_PARAMS = {"sd1": 859_520_964, "sdxl": 2_567_463_684}
SCALING_FACTOR = {"sd1": 0.18215, "sdxl": 0.13025}
NAME = {"sd1": "easyinv/fullsize-sd1-random", "sdxl": "easyinv/fullsize-sdxl-random"}
NORM_GROUPS, NORM_EPS = 32, 1e-5
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")  # torch >= 2.0


def timestep_embedding(t, dim):
    """Sinusoidal embedding, flip_sin_to_cos=True, freq_shift=0 (diffusers' get_timestep_embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb=1280):
        super().__init__()
        self.norm1 = nn.GroupNorm(NORM_GROUPS, cin, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(NORM_GROUPS, cout, eps=NORM_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nn.Module):
    def __init__(self, dim, heads, context_dim=None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x, context=None):
        context = x if context is None else context
        b, n, c = x.shape
        q, k, v = (t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        if HAS_SDPA:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = torch.softmax(q @ k.transpose(-1, -2) * (c // self.heads) ** -0.5, dim=-1) @ v
        return self.to_out[0](o.transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, context_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, dim, heads, layers, context_dim, linear_proj):
        super().__init__()
        self.linear_proj = linear_proj
        self.norm = nn.GroupNorm(NORM_GROUPS, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim) if linear_proj else nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(dim, heads, context_dim) for _ in range(layers)])
        self.proj_out = nn.Linear(dim, dim) if linear_proj else nn.Conv2d(dim, dim, 1)

    def forward(self, x, context):
        b, c, h, w = x.shape
        y = self.norm(x)
        if not self.linear_proj:
            y = self.proj_in(y)
        y = y.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.linear_proj:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        if self.linear_proj:
            y = self.proj_out(y)
        y = y.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        if not self.linear_proj:
            y = self.proj_out(y)
        return y + x


class Downsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D (no attentions) or CrossAttnDownBlock2D."""

    def __init__(self, cin, cout, n, add_downsample, attn=None):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout) for i in range(n)])
        if attn is not None:
            self.attentions = nn.ModuleList([Transformer2DModel(cout, *attn) for _ in range(n)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x, temb, context):
        outs = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
            outs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outs.append(x)
        return x, outs


class UpBlock(nn.Module):
    """UpBlock2D (no attentions) or CrossAttnUpBlock2D."""

    def __init__(self, cin, cprev, cout, n, add_upsample, attn=None):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock2D((cprev if i == 0 else cout) + (cin if i == n - 1 else cout), cout) for i in range(n)])
        if attn is not None:
            self.attentions = nn.ModuleList([Transformer2DModel(cout, *attn) for _ in range(n)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x, skips, temb, context):
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, c, attn):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer2DModel(c, *attn)])
        self.resnets = nn.ModuleList([ResnetBlock2D(c, c), ResnetBlock2D(c, c)])

    def forward(self, x, temb, context):
        return self.resnets[1](self.attentions[0](self.resnets[0](x, temb), context), temb)


class UNet2DConditionModel(nn.Module):
    def __init__(self, family):
        super().__init__()
        cfg = CONFIGS[family]
        ch, n = cfg["block_out_channels"], cfg["layers_per_block"]
        nb = len(ch)
        heads = cfg["attention_head_dim"]  # diffusers' attention_head_dim is the number of heads here
        heads = heads if isinstance(heads, tuple) else (heads,) * nb
        layers = cfg["transformer_layers_per_block"]
        layers = layers if isinstance(layers, tuple) else (layers,) * nb
        ctx, lin = cfg["cross_attention_dim"], cfg["use_linear_projection"]
        self.sdxl = cfg["addition_embed_type"] == "text_time"
        temb = ch[0] * 4

        self.conv_in = nn.Conv2d(4, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if self.sdxl:
            self.add_time_dim = cfg["addition_time_embed_dim"]
            self.add_embedding = TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], temb)
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(cfg["down_block_types"]):
            attn = (heads[i], layers[i], ctx, lin) if kind.startswith("CrossAttn") else None
            self.down_blocks.append(DownBlock(ch[max(i - 1, 0)], ch[i], n, i < nb - 1, attn))
        self.mid_block = UNetMidBlock2DCrossAttn(ch[-1], (heads[-1], layers[-1], ctx, lin))
        self.up_blocks = nn.ModuleList()
        rch, rheads, rlayers = ch[::-1], heads[::-1], layers[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            attn = (rheads[i], rlayers[i], ctx, lin) if kind.startswith("CrossAttn") else None
            self.up_blocks.append(
                UpBlock(rch[min(i + 1, nb - 1)], rch[max(i - 1, 0)], rch[i], n + 1, i < nb - 1, attn))
        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, ch[0], eps=NORM_EPS)
        self.conv_out = nn.Conv2d(ch[0], 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        emb = self.time_embedding(timestep_embedding(timestep, self.conv_in.out_channels).to(sample.dtype))
        if self.sdxl:
            t = timestep_embedding(time_ids.flatten(), self.add_time_dim).reshape(text_embeds.shape[0], -1)
            emb = emb + self.add_embedding(torch.cat([text_embeds, t.to(text_embeds.dtype)], dim=-1).to(emb.dtype))
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, outs = block(x, emb, encoder_hidden_states)
            skips += outs
        x = self.mid_block(x, emb, encoder_hidden_states)
        for block in self.up_blocks:
            x = block(x, skips, emb, encoder_hidden_states)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def random_init_(model, seed=0):
    """Cheap seeded init in place (works for float16 on any device): weights ~ N(0, 1/fan_in), biases 0,
    norms identity. Keeps activations of the random network bounded so float16 timing runs stay finite."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            m.weight.normal_(0.0, fan_in ** -0.5, generator=gen)
            if m.bias is not None:
                m.bias.zero_()
    return model


def build(family, device="cpu", dtype=torch.float32, seed=0):
    """The model with seeded random weights, allocated directly in dtype on device (no float32 copy)."""
    if hasattr(torch.device, "__enter__"):  # torch >= 2.0: no float32 CPU copy at all
        with torch.device("meta"):
            model = UNet2DConditionModel(family)
        model = model.to(dtype).to_empty(device=device)
    else:
        model = UNet2DConditionModel(family).to(device=device, dtype=dtype)
    return random_init_(model, seed).eval().requires_grad_(False)


def example_inputs(family, batch, latent, device="cpu", dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ctx = CONFIGS[family]["cross_attention_dim"]
    args = [torch.randn(batch, 4, latent, latent, generator=gen),
            torch.full((batch,), 981, dtype=torch.int64),
            torch.randn(batch, 77, ctx, generator=gen)]
    if family == "sdxl":
        side = float(latent * 8)
        args += [torch.randn(batch, 1280, generator=gen), torch.tensor([[side, side, 0.0, 0.0, side, side]] * batch)]
    return tuple(a.to(device=device, dtype=dtype if a.is_floating_point() else a.dtype) for a in args)


def manifest(family, device, dtype, latent):
    return {
        "format": "easyinv-bundle/1", "family": family, "name": NAME[family], "device": device, "dtype": dtype,
        "resolution": latent * 8,
        "latent": {"channels": 4, "size": latent, "scaling_factor": SCALING_FACTOR[family]},
        "cond_shape": [77, CONFIGS[family]["cross_attention_dim"]],
        "scheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                      "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False,
                      "timestep_spacing": "leading"},
        "files": {"unet": "unet.pt"},
        "export": {"torch": torch.__version__, "random_weights": True},
    }


def trace_to(out, family, device, dtype, latent, batch, seed=0, compiled=False):
    """Writes out/unet.pt (traced at `batch`) or, compiled, out/unet.pt2 (tools/export_sd.py's torch.export +
    AOTInductor, batches 1 to 64), and out/manifest.json."""
    # sd1 downsamples 3 times, sdxl twice; other sizes would need diffusers' upsample_size path
    factor = 2 ** (len(CONFIGS[family]["block_out_channels"]) - 1)
    if latent % factor:
        raise SystemExit(f"--latent must be a multiple of {factor} for {family}")
    t0 = time.time()
    tdtype = getattr(torch, dtype)
    model = build(family, device, tdtype, seed)
    t_build = time.time() - t0
    os.makedirs(out, exist_ok=True)
    described = manifest(family, device, dtype, latent)
    if compiled:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
        from export_sd import compile_pt2
        name = "unet.pt2"
        compile_pt2(model, example_inputs(family, max(batch, 2), latent, device, tdtype, seed), os.path.join(out, name), 64,
                    freeze=device == "cpu")
        described["files"] = {"unet": name}
        described["export"].update(format="pt2", batch=[1, 64])
    else:
        name = "unet.pt"
        with torch.no_grad():
            traced = torch.jit.trace(model, example_inputs(family, batch, latent, device, tdtype, seed),
                                     check_trace=False)
        traced.save(os.path.join(out, name))
    t_trace = time.time() - t0 - t_build
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(described, f, indent=2)
        f.write("\n")
    print(f"{family}: {count_params(model):,} parameters; built in {t_build:.1f} s, "
          f"{'compiled' if compiled else 'traced'} in {t_trace:.1f} s, total {time.time() - t0:.1f} s -> "
          f"{os.path.join(out, name)}")


def diffusers_config(family):
    cfg = dict(CONFIGS[family])
    for k in ("block_out_channels", "down_block_types", "up_block_types"):
        cfg[k] = list(cfg[k])
    for k in ("attention_head_dim", "transformer_layers_per_block"):
        if isinstance(cfg[k], tuple):
            cfg[k] = list(cfg[k])
    return dict(cfg, in_channels=4, out_channels=4, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32,
                norm_eps=1e-5, act_fn="silu", downsample_padding=1, center_input_sample=False)


def check_against_diffusers(family, output_check=True, latent=8):
    """Compare with diffusers' UNet2DConditionModel of the same config. Returns True when all checks pass."""
    from diffusers import UNet2DConditionModel as DiffusersUNet

    ok = True
    with torch.device("meta"):
        ours = UNet2DConditionModel(family)
        ref = DiffusersUNet(**diffusers_config(family))
    n_ours, n_ref = count_params(ours), count_params(ref)
    print(f"[{family}] parameters: ours {n_ours:,}, diffusers {n_ref:,}, expected {EXPECTED_PARAMS[family]:,}")
    ok &= n_ours == n_ref == EXPECTED_PARAMS[family]
    so = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    sr = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    same_keys = so == sr
    print(f"[{family}] state_dict: {len(so)} keys ours, {len(sr)} diffusers; keys and shapes identical: {same_keys}")
    if not same_keys:
        print("  only ours:", sorted(set(so) - set(sr))[:10], " only diffusers:", sorted(set(sr) - set(so))[:10])
        print("  shape differs:", [k for k in set(so) & set(sr) if so[k] != sr[k]][:10])
        print("  sorted shapes equal:", sorted(so.values()) == sorted(sr.values()))
    ok &= same_keys
    del ours, ref
    if not (output_check and same_keys):
        return ok

    t0 = time.time()
    torch.manual_seed(0)
    ref = DiffusersUNet(**diffusers_config(family)).eval()
    with torch.device("meta"):
        ours = UNet2DConditionModel(family)
    ours.load_state_dict(ref.state_dict(), assign=True)  # shares diffusers' tensors: no second copy
    ours.eval()
    args = example_inputs(family, 1, latent)
    with torch.no_grad():
        if family == "sdxl":
            y_ref = ref(args[0], args[1], args[2],
                        added_cond_kwargs={"text_embeds": args[3], "time_ids": args[4]}).sample
        else:
            y_ref = ref(*args).sample
        y = ours(*args)
        y_tr = torch.jit.trace(ours, args, check_trace=False)(*args)
    rel = ((y - y_ref).abs().max() / y_ref.abs().max()).item()
    rel_tr = ((y_tr - y_ref).abs().max() / y_ref.abs().max()).item()
    print(f"[{family}] output at latent {latent} (float32, CPU): max |ours - diffusers| / max |diffusers| = "
          f"{rel:.2e}, traced {rel_tr:.2e} ({time.time() - t0:.0f} s)")
    return ok and rel < 1e-4 and rel_tr < 1e-4


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="sd1", choices=["sd1", "sdxl", "both"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for unet.pt (or unet.pt2) and manifest.json")
    p.add_argument("--format", default="torchscript", choices=["torchscript", "pt2"],
                   help="pt2: compile with torch.export + AOTInductor (minutes) instead of tracing")
    p.add_argument("--check-against-diffusers", action="store_true")
    p.add_argument("--skip-output-check", action="store_true", help="with --check-against-diffusers")
    a = p.parse_args()
    families = ["sd1", "sdxl"] if a.family == "both" else [a.family]
    if a.check_against_diffusers:
        results = [check_against_diffusers(f, not a.skip_output_check) for f in families]
        print("PASS" if all(results) else "FAIL")
        raise SystemExit(0 if all(results) else 1)
    if not a.out or len(families) != 1:
        p.error("tracing needs --out and one --family")
    trace_to(a.out, families[0], a.device, a.dtype, a.latent, a.batch, a.seed, compiled=a.format == "pt2")


if __name__ == "__main__":
    main()
