#!/usr/bin/env python3
"""Makes an easyinv model bundle (a folder: manifest.json + TorchScript modules + tokenizers) from a diffusers
Stable Diffusion 1.x or SDXL checkpoint.

    pip install torch diffusers transformers
    python tools/export_sd.py --model CompVis/stable-diffusion-v1-4 --out bundles/sd14-cuda-fp16 \\
        --device cuda --dtype float16
    python tools/export_sd.py --model stabilityai/stable-diffusion-xl-base-1.0 --out bundles/sdxl-cuda-fp16 \\
        --vae madebyollin/sdxl-vae-fp16-fix
    python tools/export_sd.py --model ./my-sd15 --out bundles/sd15-cpu --device cpu --dtype float32

--model is a Hugging Face id or a local folder in the diffusers layout (model_index.json, unet/, vae/, ...).

The modules (torch.jit.trace, every input positional, traced at batch 1 at the bundle's resolution):
  unet          (sample[B,4,h,w], timestep int64[B], encoder_hidden_states[B,77,D]) -> eps[B,4,h,w];
                SDXL adds text_embeds[B,1280] and time_ids[B,6] (in the bundle's dtype) as the 4th and 5th inputs
                and, last, attention_sources int64[B,L] (unless --no-mutual-attention): row r's self-attention in
                layer l (the L transformer blocks in call order: SD 1.x 16, SDXL 70) takes its keys and values from
                row attention_sources[r,l], which lets easyinv edit with MasaCtrl's mutual self-attention in one
                batch; the identity is the plain UNet bit for bit (the export checks it); manifest
                "mutual_attention_layers" says L
  vae_encoder   image[B,3,H,W] in [-1, 1] -> latent mean[B,4,h,w], unscaled (multiply by latent.scaling_factor)
  vae_decoder   unscaled latent[B,4,h,w] -> image[B,3,H,W] in [-1, 1]
  text_encoder  ids int64[B,77] -> sd1: last hidden state [B,77,768]; sdxl: penultimate hidden state [B,77,768]
  text_encoder_2 (sdxl) ids int64[B,77] -> (penultimate hidden state [B,77,1280], text_embeds [B,1280])
  tokenizer.json / tokenizer_2.json  the fast CLIP tokenizers, set to truncate and pad to 77 tokens (with the
                checkpoint's pad token) as the diffusers pipelines call them.

--format pt2 compiles each module instead (torch.export with a dynamic batch axis on every input, 1 to --max-batch,
then AOTInductor) into a .pt2 package: fused kernels and the weights, loaded by easyinv built against a LibTorch of
this very PyTorch version (2.6 or newer). A package holds a compiled shared library: loading it runs native code. The
check below runs the package as it does the trace. Compiling takes minutes per module. CPU code is compiled for this
machine's instruction set unless --cpu-isa names a portable level (easyinv refuses a package on a CPU that lacks
the instructions it was compiled for).

Every file's SHA-256 goes into manifest "sha256"; easyinv checks the files against it before loading them.

The check: after tracing, each traced module and the eager module it came from run on a fresh random input of
batch --check-batch (2 by default, so a trace that baked in batch 1 fails here, not later); the traced module runs
twice (the second call runs the TorchScript executor's optimized graph). The largest absolute difference goes into
manifest "check". The export fails when that difference exceeds TOLERANCE[dtype] * max(1, largest |eager output|):
1e-3 in float32, 5e-2 in float16 (a wrong trace gives differences of the output's own size, while fusion and
kernel choice change float16 results by a few units in the last place, which add up through a deep network). A
non-finite output fails too (with --random-weights it is only reported: untrained weights may overflow).

Limits, as far as known:
- Device and dtype are baked in by tracing: a cuda bundle runs on CUDA only, in its dtype only. Use
  CUDA_VISIBLE_DEVICES to pick a GPU (tracing on cuda:1 would bake in cuda:1).
- Batch size is free (checked). Image size is not: diffusers picks some code paths in Python from the size
  (e.g. explicit upsampling sizes when the latent side is not a multiple of 2**levels), so run the bundle at its
  resolution. diffusers' Upsample2D makes its input contiguous only for batches of 64 or more, a Python choice
  that the batch-1 trace keeps (it works around a PyTorch kernel issue with very large batches).
- TorchScript files load only in a LibTorch at least as new as the PyTorch that wrote them; PyTorch >= 2.0 writes
  scaled_dot_product_attention, which LibTorch 1.13 lacks.
- SDXL's VAE overflows in float16 (its config says force_upcast): pass --vae madebyollin/sdxl-vae-fp16-fix or
  export in float32. The SDXL refiner (no first text encoder, 5 time ids) is not supported.
- The library runs DDIM with epsilon prediction: checkpoints with v-prediction, trained betas, zero-SNR rescaling
  or a beta schedule other than linear / scaled_linear are refused.

--help, the argument checks, the manifest code and the wrappers need neither diffusers nor transformers (the
tests in tools/test_export_sd.py run them with torch only).
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from types import SimpleNamespace

from pt2_file import slim_package

try:
    import torch
    _Module = torch.nn.Module
except ImportError:  # --help and argument errors work without torch
    torch = None
    _Module = object

FORMAT = "easyinv-bundle/1"
FAMILIES = ("sd1", "sdxl")
MODULES = {
    "sd1": ("unet", "vae_encoder", "vae_decoder", "text_encoder"),
    "sdxl": ("unet", "vae_encoder", "vae_decoder", "text_encoder", "text_encoder_2"),
}
TOKENIZER_OF = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
TOKENS = 77
TOLERANCE = {"float32": 1e-3, "float16": 5e-2}
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset",
                  "set_alpha_to_one", "timestep_spacing")
# diffusers' DDIMScheduler defaults, for keys that a checkpoint's scheduler config lacks.
DDIM_DEFAULTS = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                 "steps_offset": 0, "set_alpha_to_one": True, "timestep_spacing": "leading"}
PIP = "pip install diffusers transformers"
# Inductor compiles CPU code for this machine's vector instructions with -march=native; a named target compiles for
# every x86-64 CPU of that level instead: ATen's capability name (which Inductor's vector code follows) and -march.
CPU_TARGETS = {"native": None, "avx2": ("avx2", "x86-64-v3"), "avx512": ("avx512", "x86-64-v4")}


class ExportError(Exception):
    """A problem the user can act on; main() prints it and exits with status 1."""


# ---------------------------------------------------------------------------------------------------------------
# Arguments


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="export_sd.py",
        description="Export a diffusers Stable Diffusion 1.x / SDXL checkpoint as an easyinv bundle.")
    parser.add_argument("--model", required=True, help="Hugging Face id or local diffusers folder")
    parser.add_argument("--out", required=True, help="bundle folder to write (created if missing)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="device to trace on; the bundle runs there only (default: cuda)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default=None,
                        help="dtype to trace in (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--family", default=None,
                        help="sd1 or sdxl (default: sdxl when the checkpoint has text_encoder_2, else sd1)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="image side in pixels (default: the UNet's sample_size * the VAE's scale factor)")
    parser.add_argument("--modules", default=None,
                        help="comma-separated subset of unet,vae_encoder,vae_decoder,text_encoder,text_encoder_2 "
                             "(default: all of the family's); tokenizers come with their text encoders")
    parser.add_argument("--random-weights", action="store_true",
                        help="build the architectures from their configs with random weights (for timing; "
                             "downloads config and tokenizer files only)")
    parser.add_argument("--vae", default=None,
                        help="an AutoencoderKL checkpoint to use instead of the model's own VAE "
                             "(e.g. madebyollin/sdxl-vae-fp16-fix for SDXL in float16)")
    parser.add_argument("--name", default=None,
                        help="the bundle's name in its manifest (default: --model)")
    parser.add_argument("--format", choices=("torchscript", "pt2"), default="torchscript",
                        help="torchscript: torch.jit.trace into .pt files (any LibTorch as new as this PyTorch); "
                             "pt2: torch.export and AOTInductor into compiled .pt2 packages (fused kernels; easyinv "
                             "built against LibTorch >= 2.6, the same version as this PyTorch)")
    parser.add_argument("--cpu-isa", choices=tuple(CPU_TARGETS), default="native",
                        help="pt2 on cpu: the x86 CPUs the package runs on. native: this machine's instruction set "
                             "(fastest here; other CPUs may lack it, and easyinv refuses the package there); avx2: "
                             "every x86-64 CPU with AVX2 (x86-64-v3, most since 2015); avx512: those with AVX-512 "
                             "(x86-64-v4)")
    parser.add_argument("--max-batch", type=int, default=64,
                        help="pt2: the largest batch a package accepts (default 64; guidance doubles the batch)")
    parser.add_argument("--mutual-attention", action=argparse.BooleanOptionalAction, default=True,
                        help="the UNet takes one more input, attention_sources int64 [B, layers], which lets a "
                             "batch row's self-attention take its keys and values from another row (MasaCtrl "
                             "editing); the identity is the plain UNet, bit for bit (default: on)")
    parser.add_argument("--check-batch", type=int, default=2, help="batch size of the check input (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the example and check inputs (default: 0)")
    args = parser.parse_args(argv)

    if args.dtype is None:
        args.dtype = "float16" if args.device == "cuda" else "float32"
    if args.dtype == "float16" and args.device == "cpu":
        parser.error("--dtype float16 needs --device cuda: PyTorch has no float16 convolution on the CPU "
                     "(use --device cpu --dtype float32)")
    if args.family is not None and args.family not in FAMILIES:
        parser.error(f"unknown --family {args.family!r}: expected sd1 or sdxl")
    if args.resolution is not None and (args.resolution <= 0 or args.resolution % 8 != 0):
        parser.error(f"--resolution {args.resolution} must be a positive multiple of 8")
    if args.check_batch < 1:
        parser.error("--check-batch must be at least 1")
    if args.max_batch < 2:
        parser.error("--max-batch must be at least 2")
    if args.modules is not None:
        names = tuple(dict.fromkeys(name.strip() for name in args.modules.split(",") if name.strip()))
        unknown = [name for name in names if name not in MODULES["sdxl"]]
        if unknown or not names:
            parser.error(f"unknown --modules {', '.join(unknown) or '(none)'}: choose from {','.join(MODULES['sdxl'])}")
        args.modules = names
    return args


# ---------------------------------------------------------------------------------------------------------------
# Configs and the manifest (plain dicts: no diffusers needed)


def detect_family(model_index: dict) -> str:
    """sdxl when model_index.json names a text_encoder_2 component, else sd1."""
    entry = model_index.get("text_encoder_2")
    present = isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] is not None
    return "sdxl" if present else "sd1"


def check_family(family: str, unet_config: dict) -> None:
    text_time = unet_config.get("addition_embed_type") == "text_time"
    if family == "sd1" and text_time:
        raise ExportError("this UNet takes SDXL's added conditions (addition_embed_type text_time): use --family sdxl")
    if family == "sdxl" and not text_time:
        raise ExportError("this UNet takes no SDXL added conditions (addition_embed_type is "
                          f"{unet_config.get('addition_embed_type')!r}): use --family sd1")


def modules_for(family: str, requested=None) -> tuple:
    if requested is None:
        return MODULES[family]
    extra = [name for name in requested if name not in MODULES[family]]
    if extra:
        raise ExportError(f"family {family} has no {', '.join(extra)}")
    return tuple(requested)


def vae_scale_factor(vae_config: dict) -> int:
    return 2 ** (len(vae_config["block_out_channels"]) - 1)


def default_resolution(unet_config: dict, vae_config: dict) -> int:
    size = unet_config.get("sample_size")
    if isinstance(size, (list, tuple)):
        size = size[0]
    if not size:
        raise ExportError("the UNet config has no sample_size: pass --resolution")
    return int(size) * vae_scale_factor(vae_config)


def check_resolution(resolution: int, unet_config: dict, vae_config: dict) -> None:
    multiple = vae_scale_factor(vae_config) * 2 ** (len(unet_config["block_out_channels"]) - 1)
    if resolution % multiple != 0:
        raise ExportError(f"--resolution {resolution} must be a multiple of {multiple} for this UNet and VAE")


def sdxl_added_dims(unet_config: dict) -> tuple:
    """(text_embeds width, number of time ids) of an SDXL UNet: 6 ids, the rest of the projection input is text."""
    time_ids = 6
    text = unet_config["projection_class_embeddings_input_dim"] - time_ids * unet_config["addition_time_embed_dim"]
    return text, time_ids


def scheduler_subset(config: dict) -> dict:
    """The DDIM keys the library reads, from a checkpoint's scheduler config; refuses what the library cannot run."""
    if config.get("trained_betas") is not None:
        raise ExportError("the scheduler config has trained_betas, which easyinv does not support")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ExportError(f"the checkpoint predicts {config['prediction_type']}; easyinv supports epsilon only")
    if config.get("rescale_betas_zero_snr"):
        raise ExportError("the scheduler config rescales betas to zero SNR, which easyinv does not support")
    subset = {key: config.get(key, DDIM_DEFAULTS[key]) for key in SCHEDULER_KEYS}
    if subset["beta_schedule"] not in ("linear", "scaled_linear"):
        raise ExportError(f"beta_schedule {subset['beta_schedule']!r} is not supported (linear or scaled_linear)")
    if subset["timestep_spacing"] not in ("leading", "trailing", "linspace"):
        raise ExportError(f"timestep_spacing {subset['timestep_spacing']!r} is not supported")
    subset["num_train_timesteps"] = int(subset["num_train_timesteps"])
    subset["beta_start"], subset["beta_end"] = float(subset["beta_start"]), float(subset["beta_end"])
    subset["steps_offset"] = int(subset["steps_offset"])
    subset["set_alpha_to_one"] = bool(subset["set_alpha_to_one"])
    return subset


def build_manifest(*, family, name, device, dtype, resolution, unet_config, vae_config, scheduler_config, files,
                   check, versions, random_weights, date=None) -> dict:
    scale = vae_scale_factor(vae_config)
    if resolution % scale != 0:
        raise ExportError(f"resolution {resolution} is not a multiple of the VAE scale factor {scale}")
    return {
        "format": FORMAT,
        "family": family,
        "name": name,
        "device": device,
        "dtype": dtype,
        "resolution": resolution,
        "latent": {
            "channels": int(vae_config.get("latent_channels", 4)),
            "size": resolution // scale,
            "scaling_factor": float(vae_config.get("scaling_factor", 0.18215)),  # AutoencoderKL's default
        },
        "cond_shape": [TOKENS, int(unet_config["cross_attention_dim"])],
        "scheduler": scheduler_subset(scheduler_config),
        "files": dict(files),
        "check": {key: (None if value is None or not math.isfinite(value) else float(value))
                  for key, value in check.items()},
        "export": {
            **versions,
            "random_weights": bool(random_weights),
            "date": date or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }


SAME_BUNDLE_KEYS = ("format", "family", "name", "device", "dtype", "resolution", "latent", "cond_shape")


def merge_manifest(previous, manifest: dict, out: str) -> dict:
    """Keeps the files (and checks) of an earlier export into the same folder that this one did not redo, when
    that export made the same bundle (same model, family, device, dtype, resolution, real or random weights)."""
    if not isinstance(previous, dict) or any(previous.get(key) != manifest[key] for key in SAME_BUNDLE_KEYS):
        return manifest
    if bool((previous.get("export") or {}).get("random_weights")) != manifest["export"]["random_weights"]:
        return manifest
    merged = dict(manifest, files=dict(manifest["files"]), check=dict(manifest["check"]))
    for role, file in (previous.get("files") or {}).items():
        if role not in merged["files"] and isinstance(file, str) and os.path.exists(os.path.join(out, file)):
            merged["files"][role] = file
            if role in (previous.get("check") or {}):
                merged["check"][role] = previous["check"][role]
            if role == "unet" and "mutual_attention_layers" in previous:
                merged["mutual_attention_layers"] = previous["mutual_attention_layers"]
    return merged


def write_manifest(out: str, manifest: dict) -> str:
    path = os.path.join(out, "manifest.json")
    with open(path, "w") as file:
        json.dump(manifest, file, indent=2, allow_nan=False)
        file.write("\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Wrappers: the diffusers / transformers call conventions behind plain positional tensor signatures


class MutualSelfAttention:
    """A diffusers attention processor for a self-attention layer whose batch rows may take their keys and values
    from other rows: row r attends to the hidden states of row attention_sources[r, layer] (MasaCtrl's mutual
    self-attention). Layers are numbered in call order, counted afresh in every forward: the order MasaCtrl counts
    them in (named_modules() lists the up blocks before the mid block)."""

    def __init__(self, processor, state):
        self.processor, self.state = processor, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        layer = self.state.next_layer
        self.state.next_layer += 1
        rows = self.state.sources[:, layer]
        # The keys and values are made from the selected rows; selecting each row itself gives the plain layer's
        # own inputs, so the identity is the plain UNet bit for bit.
        return self.processor(attn, hidden_states, encoder_hidden_states=hidden_states.index_select(0, rows),
                              **kwargs)


class MutualAttention:
    """Puts MutualSelfAttention on every self-attention layer (diffusers' "attn1") of `unet`."""

    def __init__(self, unet):
        processors = getattr(unet, "attn_processors", None)
        names = [name for name in processors or {} if name.endswith("attn1.processor")]
        if not names:
            raise ExportError("this UNet has no diffusers self-attention layers (attn1) to control: export it "
                              "with --no-mutual-attention")
        self.layers = len(names)
        self.state = SimpleNamespace(sources=None, next_layer=0)
        self.plain = dict(processors)
        unet.set_attn_processor({name: MutualSelfAttention(processor, self.state) if name in names else processor
                                 for name, processor in processors.items()})

    def run(self, sources, call):
        if sources is None:
            raise ValueError("this UNet takes attention_sources int64 [B, layers] as its last input")
        self.state.sources, self.state.next_layer = sources, 0
        eps = call()
        if self.state.next_layer != self.layers:
            raise ExportError(f"the UNet ran {self.state.next_layer} of its {self.layers} self-attention layers")
        return eps


class UNetWrapper(_Module):
    """(sample, timestep, encoder_hidden_states[, attention_sources]) -> eps; attention_sources with
    mutual_attention."""

    def __init__(self, unet, mutual_attention=False):
        super().__init__()
        self.unet = unet
        self.mutual = MutualAttention(unet) if mutual_attention else None

    def forward(self, sample, timestep, encoder_hidden_states, attention_sources=None):
        return self.controlled(attention_sources, sample, timestep, encoder_hidden_states)

    def controlled(self, sources, *args, **kwargs):
        call = lambda: self.unet(*args, **kwargs, return_dict=False)[0]  # noqa: E731
        return self.mutual.run(sources, call) if self.mutual else call()


class SDXLUNetWrapper(UNetWrapper):
    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids, attention_sources=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
        return self.controlled(attention_sources, sample, timestep, encoder_hidden_states, added_cond_kwargs=added)


class VaeEncoderWrapper(_Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return self.vae.encode(image).latent_dist.mean


class VaeDecoderWrapper(_Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent).sample


class TextEncoderWrapper(_Module):
    """SD 1.x: the last hidden state (after the final layer norm)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        return self.text_encoder(ids, return_dict=True).last_hidden_state


class PenultimateTextEncoderWrapper(_Module):
    """SDXL's first encoder: the penultimate layer's hidden state."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        return self.text_encoder(ids, output_hidden_states=True, return_dict=True).hidden_states[-2]


class ProjectionTextEncoderWrapper(_Module):
    """SDXL's second encoder (CLIPTextModelWithProjection): (penultimate hidden state, text_embeds)."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, ids):
        output = self.text_encoder(ids, output_hidden_states=True, return_dict=True)
        return output.hidden_states[-2], output.text_embeds


def wrap(name: str, family: str, module, mutual_attention=False):
    if name == "unet":
        return (SDXLUNetWrapper if family == "sdxl" else UNetWrapper)(module, mutual_attention)
    if name == "vae_encoder":
        return VaeEncoderWrapper(module)
    if name == "vae_decoder":
        return VaeDecoderWrapper(module)
    if name == "text_encoder":
        return PenultimateTextEncoderWrapper(module) if family == "sdxl" else TextEncoderWrapper(module)
    if name == "text_encoder_2":
        return ProjectionTextEncoderWrapper(module)
    raise ValueError(f"unknown module {name}")


# ---------------------------------------------------------------------------------------------------------------
# Inputs, tracing and the check


def example_inputs(name: str, spec: dict, batch: int, device, dtype, generator) -> tuple:
    """Random inputs for module `name`. spec: resolution, channels, latent_size, scaling_factor, cond_shape,
    vocab_size (text encoders), text_embeds_dim and time_ids (SDXL's UNet; absent for sd1)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    if name == "unet":
        side = spec["latent_size"]
        steps = spec.get("num_train_timesteps", 1000)
        timestep = torch.randint(0, steps, (batch,), generator=generator, dtype=torch.int64).to(device)
        inputs = (randn(batch, spec["channels"], side, side), timestep, randn(batch, *spec["cond_shape"]))
        if spec.get("time_ids"):
            r = float(spec["resolution"])
            time_ids = torch.tensor([[r, r, 0.0, 0.0, r, r]] * batch).to(device=device, dtype=dtype)
            inputs += (randn(batch, spec["text_embeds_dim"]), time_ids)
        if spec.get("mutual_attention_layers"):  # random rows: the check runs the mutual path, not only the identity
            inputs += (torch.randint(0, batch, (batch, spec["mutual_attention_layers"]), generator=generator).to(device),)
        return inputs
    if name == "vae_encoder":
        side = spec["resolution"]
        return (torch.rand(batch, 3, side, side, generator=generator).mul(2).sub(1).to(device=device, dtype=dtype),)
    if name == "vae_decoder":
        side = spec["latent_size"]
        return ((torch.randn(batch, spec["channels"], side, side, generator=generator) / spec["scaling_factor"])
                .to(device=device, dtype=dtype),)
    if name in ("text_encoder", "text_encoder_2"):
        ids = torch.randint(0, spec["vocab_size"], (batch, spec["cond_shape"][0]), generator=generator)
        return (ids.to(device),)
    raise ValueError(f"unknown module {name}")


def trace(wrapper, inputs):
    """torch.jit.trace without grad and without trace's own re-run check (check_trace does a stricter one)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(wrapper, inputs, check_trace=False)


def target_cpu(isa: str) -> None:
    """Makes this process's AOTInductor compile CPU code for CPU_TARGETS[isa]."""
    if CPU_TARGETS[isa] is None:
        return
    import torch._inductor.config
    capability, march = CPU_TARGETS[isa]
    os.environ["ATEN_CPU_CAPABILITY"] = capability
    torch._inductor.config.cpp.march = march


def compile_pt2(wrapper, inputs, path: str, max_batch: int, *, freeze: bool):
    """torch.export with a dynamic batch (every input's first axis), then AOTInductor into the package `path`, slimmed
    (tools/pt2_file.py); returns the package loaded in this process, for the check. `inputs` must have a batch of 2 or
    more: export specialises a batch of 1. `freeze`: Inductor's freezing, which folds the weights into the graph and
    prepacks them for oneDNN in this CPU's layout, fusing convolutions and linear layers with what follows them. On
    the full-size SD-V1-4 UNet on a CPU (32 x 32 latents) it takes a forward from 1.31x TorchScript's time to 1.05x;
    on the tiny demo UNet it costs 1.1x. A prepacked layout is this CPU's: for packages that run on this machine only."""
    import torch._inductor.config
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    settings = {"freezing": freeze}
    # Debug line tables (-g1 by default) hold the compiling machine's paths; tracebacks into the package lose its lines.
    if hasattr(torch._inductor.config.aot_inductor, "enable_line_tables"):
        settings["aot_inductor.enable_line_tables"] = False
    with (torch.no_grad(), torch._inductor.config.patch(settings),
          tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as scratch):
        program = torch.export.export(wrapper, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs))
        package = os.path.join(scratch, os.path.basename(path))
        torch._inductor.aoti_compile_and_package(program, package_path=package)
        slim_package(package)
        os.replace(package, path)
    return torch._inductor.aoti_load_package(path)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(out: str, files: dict) -> dict:
    """SHA-256 of each file of the bundle, by file name: easyinv checks them before loading (a truncated or replaced
    file is then a clear error, not LibTorch's)."""
    return {name: sha256_of(os.path.join(out, name)) for name in sorted(set(files.values()))
            if os.path.isfile(os.path.join(out, name))}


def _tensors(output) -> list:
    return list(output) if isinstance(output, (tuple, list)) else [output]


def max_difference(traced_output, eager_output) -> float:
    """Largest |traced - eager| over all outputs; inf when the structure or a shape differs, nan when non-finite."""
    a, b = _tensors(traced_output), _tensors(eager_output)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return math.inf
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def output_scale(output) -> float:
    return max(float(t.double().abs().max()) if t.numel() else 0.0 for t in _tensors(output))


def tolerance(dtype: str, scale: float) -> float:
    return TOLERANCE[dtype] * max(1.0, scale)


def check_trace(name: str, traced, eager, inputs, dtype: str, allow_nonfinite: bool = False):
    """Runs eager and traced (twice) on `inputs`; returns the largest absolute difference (None when the outputs are
    not finite and allow_nonfinite), raises ExportError when the trace is wrong."""
    batch = inputs[0].shape[0]
    with torch.no_grad():
        expected = eager(*inputs)
        if not all(bool(torch.isfinite(t).all()) for t in _tensors(expected)):
            if allow_nonfinite:
                print(f"export_sd: warning: {name} gives non-finite values (random weights); not checked",
                      file=sys.stderr)
                return None
            raise ExportError(f"{name} gives non-finite values in {dtype} (inf or nan); "
                              "export in float32, or for SDXL's VAE use --vae madebyollin/sdxl-vae-fp16-fix")
        difference = 0.0
        for _ in range(2):
            try:
                got = traced(*inputs)
            except Exception as error:  # noqa: BLE001: any failure of the traced module is a wrong trace
                raise ExportError(f"the traced {name} fails on a batch of {batch}: {error}") from error
            difference = max(difference, max_difference(got, expected))
    limit = tolerance(dtype, output_scale(expected))
    if not difference <= limit:  # also catches nan
        raise ExportError(f"the traced {name} differs from the eager module by {difference:.3g} on a batch of "
                          f"{batch} (limit {limit:.3g} in {dtype}): the trace is wrong")
    return difference


def check_identity_is_plain(unet, wrapper, inputs):
    """The controlled UNet with every row attending to itself must be the plain UNet, bit for bit."""
    *plain_inputs, sources = inputs
    identity = torch.arange(sources.shape[0], device=sources.device)[:, None].expand_as(sources)
    controlled = dict(unet.attn_processors)
    with torch.no_grad():
        got = wrapper(*plain_inputs, identity)
        unet.set_attn_processor(dict(wrapper.mutual.plain))  # diffusers empties the dict it is given
        try:
            expected = (SDXLUNetWrapper if len(plain_inputs) == 5 else UNetWrapper)(unet)(*plain_inputs)
        finally:
            unet.set_attn_processor(controlled)
    if not torch.equal(got, expected):
        raise ExportError(f"with attention_sources the identity, the UNet differs from the plain one by "
                          f"{max_difference(got, expected):.3g}: the mutual attention is wrong")


# ---------------------------------------------------------------------------------------------------------------
# diffusers / transformers


def require_hf():
    try:
        import diffusers
        import transformers
    except ImportError as error:
        raise ExportError(f"{error.name} is not installed: {PIP}") from error
    return diffusers, transformers


class Checkpoint:
    """The configs of a diffusers checkpoint, and its modules loaded one at a time."""

    def __init__(self, args):
        diffusers, transformers = self.diffusers, self.transformers = require_hf()
        self.args = args
        self.model_index = dict(diffusers.DiffusionPipeline.load_config(args.model))
        self.unet_config = dict(diffusers.UNet2DConditionModel.load_config(args.model, subfolder="unet"))
        self.vae_source = (args.vae, None) if args.vae else (args.model, "vae")
        self.vae_config = dict(diffusers.AutoencoderKL.load_config(self.vae_source[0], subfolder=self.vae_source[1]))
        raw = dict(diffusers.DDIMScheduler.load_config(args.model, subfolder="scheduler"))
        scheduler_class = getattr(diffusers, raw.get("_class_name", ""), None)
        # The checkpoint's own scheduler class fills in its defaults, as pipe.scheduler.config would.
        self.scheduler_config = dict(scheduler_class.from_config(raw).config) if scheduler_class else raw

    def load(self, name: str, dtype, device):
        diffusers, transformers, model = self.diffusers, self.transformers, self.args.model
        random = self.args.random_weights
        if name == "unet":
            cls, source, config = diffusers.UNet2DConditionModel, (model, "unet"), self.unet_config
        elif name in ("vae_encoder", "vae_decoder"):
            cls, source, config = diffusers.AutoencoderKL, self.vae_source, self.vae_config
        else:
            cls = transformers.CLIPTextModel if name == "text_encoder" else transformers.CLIPTextModelWithProjection
            source = (model, name)
            config = transformers.CLIPTextConfig.from_pretrained(model, subfolder=name) if random else None
        if random:  # diffusers models are made with from_config, transformers models with their config
            module = cls(config) if name.startswith("text_encoder") else cls.from_config(config)
        else:
            module = cls.from_pretrained(source[0], subfolder=source[1], torch_dtype=dtype)
        return module.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def tokenizer(self, role: str):
        return self.transformers.CLIPTokenizerFast.from_pretrained(self.args.model, subfolder=role)


def save_tokenizer(tokenizer, path: str) -> None:
    """The fast tokenizer's JSON, set to truncate and pad to model_max_length as the diffusers pipelines call it."""
    backend = tokenizer.backend_tokenizer
    length = tokenizer.model_max_length
    backend.enable_truncation(max_length=length)
    backend.enable_padding(length=length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(path)


# ---------------------------------------------------------------------------------------------------------------


def export(args, checkpoint=None) -> dict:
    """Writes the bundle; `checkpoint` (for tests) stands in for Checkpoint(args)."""
    if torch is None:
        raise ExportError(f"torch is not installed: pip install torch && {PIP}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda but this PyTorch sees no CUDA device: use --device cpu --dtype float32, "
                          "or install a CUDA build of PyTorch")
    checkpoint = checkpoint or Checkpoint(args)
    family = args.family or detect_family(checkpoint.model_index)
    check_family(family, checkpoint.unet_config)
    modules = modules_for(family, args.modules)
    resolution = args.resolution or default_resolution(checkpoint.unet_config, checkpoint.vae_config)
    check_resolution(resolution, checkpoint.unet_config, checkpoint.vae_config)
    scheduler_subset(checkpoint.scheduler_config)  # refuse unsupported schedules before the slow part
    if (args.dtype == "float16" and checkpoint.vae_config.get("force_upcast")
            and any(name.startswith("vae") for name in modules)):
        print("export_sd: warning: this VAE's config says force_upcast (it overflows in float16); the check "
              "may not catch it. For SDXL use --vae madebyollin/sdxl-vae-fp16-fix", file=sys.stderr)

    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    manifest_args = dict(family=family, name=getattr(args, "name", None) or args.model, device=args.device, dtype=args.dtype,
                         resolution=resolution, unet_config=checkpoint.unet_config,
                         vae_config=checkpoint.vae_config, scheduler_config=checkpoint.scheduler_config)
    base = build_manifest(**manifest_args, files={}, check={}, versions={}, random_weights=args.random_weights)
    spec = {"resolution": resolution, "channels": base["latent"]["channels"], "latent_size": base["latent"]["size"],
            "scaling_factor": base["latent"]["scaling_factor"], "cond_shape": base["cond_shape"],
            "num_train_timesteps": base["scheduler"]["num_train_timesteps"]}
    if family == "sdxl":
        spec["text_embeds_dim"], spec["time_ids"] = sdxl_added_dims(checkpoint.unet_config)

    os.makedirs(args.out, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    files, check = {}, {}
    if args.format == "pt2" and device.type == "cpu":
        target_cpu(args.cpu_isa)
    for name in modules:
        print(f"export_sd: {name}: loading", file=sys.stderr)
        eager = checkpoint.load(name, dtype, device)
        module_spec = dict(spec, vocab_size=getattr(getattr(eager, "config", None), "vocab_size", 49408))
        wrapper = wrap(name, family, eager, args.mutual_attention)
        if name == "unet" and wrapper.mutual:
            module_spec["mutual_attention_layers"] = spec["mutual_attention_layers"] = wrapper.mutual.layers
            check_identity_is_plain(eager, wrapper, example_inputs(name, module_spec, args.check_batch, device,
                                                                     dtype, generator))
        if args.format == "pt2":
            files[name] = f"{name}.pt2"
            print(f"export_sd: {name}: exporting and compiling (minutes)", file=sys.stderr)
            traced = compile_pt2(wrapper, example_inputs(name, module_spec, 2, device, dtype, generator),
                                 os.path.join(args.out, files[name]), args.max_batch,
                                 freeze=device.type == "cpu" and args.cpu_isa == "native")
        else:
            files[name] = f"{name}.pt"
            print(f"export_sd: {name}: tracing", file=sys.stderr)
            traced = trace(wrapper, example_inputs(name, module_spec, 1, device, dtype, generator))
        inputs = example_inputs(name, module_spec, args.check_batch, device, dtype, generator)
        check[name] = check_trace(name, traced, wrapper, inputs, args.dtype, allow_nonfinite=args.random_weights)
        if args.format == "torchscript":
            traced.save(os.path.join(args.out, files[name]))
        print(f"export_sd: {name}: wrote {files[name]} (check {check[name]})", file=sys.stderr)
        if name in TOKENIZER_OF:
            role = TOKENIZER_OF[name]
            files[role] = f"{role}.json"
            save_tokenizer(checkpoint.tokenizer(role), os.path.join(args.out, files[role]))
        del eager, wrapper, traced, inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()

    versions = {"torch": torch.__version__, "diffusers": checkpoint.diffusers.__version__,
                "transformers": checkpoint.transformers.__version__, "format": args.format}
    if args.format == "pt2":
        versions["batch"] = [1, args.max_batch]
        if device.type == "cpu":
            versions["cpu_isa"] = args.cpu_isa
    manifest = build_manifest(**manifest_args, files=files, check=check, versions=versions,
                              random_weights=args.random_weights)
    if "mutual_attention_layers" in spec:
        manifest["mutual_attention_layers"] = spec["mutual_attention_layers"]
    previous_path = os.path.join(args.out, "manifest.json")
    if os.path.exists(previous_path):
        with open(previous_path) as file:
            try:
                previous = json.load(file)
            except ValueError:
                previous = None
        manifest = merge_manifest(previous, manifest, args.out)
    manifest["sha256"] = file_digests(args.out, manifest["files"])
    write_manifest(args.out, manifest)
    if "unet" not in manifest["files"]:
        print("export_sd: warning: the bundle has no unet yet; easyinv needs one (--modules unet)", file=sys.stderr)
    return manifest


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        manifest = export(args)
    except ExportError as error:
        print(f"export_sd: error: {error}", file=sys.stderr)
        return 1
    print(f"export_sd: wrote {os.path.join(args.out, 'manifest.json')}: {', '.join(manifest['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
