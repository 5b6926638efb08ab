#!/usr/bin/env python3
"""Builds tiny random-weight diffusers pipelines (Stable Diffusion 1.x and SDXL, with the real classes and block
kinds, small widths) and exports them with tools/export_sd.py into the bundles weights/diffusers-sd1 and
weights/diffusers-sdxl. They check export_sd.py against real diffusers and transformers, and give the library
bundles with the properties of real exported ones (diffusers' traced graphs, CLIP's int64 position_ids buffer,
the real tokenizers' padding: "<|endoftext|>" for SD 1.x and SDXL's first tokenizer, "!" (id 0) for SDXL's
second), small enough to commit. test/python/reference_diffusers.py computes diffusers' own inversions on the same
pipelines (keep them with --pipelines).

diffusers is used from a source checkout (git clone https://github.com/huggingface/diffusers); transformers,
safetensors and huggingface-hub from pip. From the repository root:

    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python test/python/make_diffusers_bundles.py \\
        --pipelines <folder for the diffusers pipelines>

What it does, per family (seeded: the same versions give the same weights):
  1. builds the pipeline: UNet2DConditionModel, AutoencoderKL (8x downsampling), CLIPTextModel (SDXL: plus
     CLIPTextModelWithProjection) with CLIP's vocabulary of 49408 and a tiny hidden size, fast CLIP tokenizers
     over weights/clip/tokenizer.json, and the checkpoint's scheduler config (SD 1.x: DDIMScheduler set as
     CompVis/stable-diffusion-v1-4's; SDXL: EulerDiscreteScheduler set as stable-diffusion-xl-base-1.0's);
  2. re-randomises (seeded normal) any weight matrix that the library initialised to zeros, and checks that the
     UNet's output depends on its sample, timestep and condition;
  3. saves it with save_pretrained into <pipelines>/sd1 or <pipelines>/sdxl (a temporary folder without
     --pipelines);
  4. runs tools/export_sd.py on that folder (--device cpu --dtype float32 --name easyinv/diffusers-<family>);
  5. removes the TorchScript debug records (*.debug_pkl) from the exported modules: they hold the Python
     source lines of the traced code (diffusers' and transformers') and the paths of this machine's files;
     loading does not need them. Names the packaged CLIP tokenizers in the manifest instead of keeping the
     exported tokenizer JSONs (the same vocabulary and padding);
  6. prints each text encoder's buffers with their dtypes (CLIP's position_ids must stay int64);
  7. (--compiled-twins sd1) writes diffusers-<family>-pt2: the same bundle with its UNet compiled by
     export_sd.py --format pt2 (PyTorch 2.6 or newer; minutes), which test/compiled.test.ts compares with its
     TorchScript twin, diffusers and MasaCtrl; compiled for every x86-64 CPU with AVX2. Compiled code carries the paths of the PyTorch headers it included
     (assertion messages): make the committed twin with a PyTorch installed under a neutral path (a virtual
     environment such as /opt/torch); the compiler's cache goes to a temporary folder.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WEIGHTS = os.path.join(REPO, "weights")
sys.path.insert(0, os.path.join(REPO, "tools"))

from torchscript_file import strip_sources  # noqa: E402
from export_sd import file_digests  # noqa: E402
CLIP_TOKENIZER = os.path.join(WEIGHTS, "clip", "tokenizer.json")
EXPORT = os.path.join(REPO, "tools", "export_sd.py")
TOKENS = 77
RESOLUTION = 128  # pixels; latents are 16 x 16

# CompVis/stable-diffusion-v1-4 scheduler config, as a DDIMScheduler.
SD1_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                 "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": False,
                 "clip_sample": False, "timestep_spacing": "leading", "prediction_type": "epsilon"}
# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (EulerDiscreteScheduler).
SDXL_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "clip_sample": False, "interpolation_type": "linear",
                  "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
                  "use_karras_sigmas": False}

# The tiny configs. Real values in comments.
SD1_TEXT = dict(vocab_size=49408, hidden_size=8, intermediate_size=32, num_hidden_layers=2,  # 768, 3072, 12
                num_attention_heads=2, max_position_embeddings=TOKENS, hidden_act="quick_gelu",  # 12
                bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=8)  # as the real config.json
SDXL_TEXT = dict(SD1_TEXT, hidden_size=8, intermediate_size=32, projection_dim=8)  # 768, 3072, 768
SDXL_TEXT_2 = dict(SD1_TEXT, hidden_size=8, intermediate_size=32, hidden_act="gelu",  # 1280, 5120, 32 layers
                   projection_dim=8)  # 1280
# The UNets have the real block layouts at small widths: SD-1's 16 transformer blocks and SDXL's 70, which MasaCtrl's
# layer numbers (start_layer 10 of 16; 44 of 70) refer to.
SD1_UNET = dict(sample_size=RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=2,  # 64
                block_out_channels=(16, 16, 32, 32), norm_num_groups=8,  # (320, 640, 1280, 1280), 32
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                attention_head_dim=2,  # 8 (diffusers' name for the number of heads in SD 1.x)
                cross_attention_dim=SD1_TEXT["hidden_size"])  # 768
SDXL_UNET = dict(sample_size=RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=2,  # 128
                 block_out_channels=(8, 16, 16), norm_num_groups=8,  # (320, 640, 1280), 32
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 attention_head_dim=(2, 4, 4),  # (5, 10, 20)
                 transformer_layers_per_block=(1, 2, 10),
                 use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=8,  # 256
                 projection_class_embeddings_input_dim=SDXL_TEXT_2["projection_dim"] + 6 * 8,  # 1280 + 6 * 256
                 cross_attention_dim=SDXL_TEXT["hidden_size"] + SDXL_TEXT_2["hidden_size"])  # 2048
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,  # 2
           block_out_channels=(8, 8, 16, 16), norm_num_groups=4,  # (128, 256, 512, 512), 32
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           sample_size=RESOLUTION)
SD1_VAE = dict(VAE, scaling_factor=0.18215)
SDXL_VAE = dict(VAE, scaling_factor=0.13025, force_upcast=True)


def tokenizer(transformers, pad_token):
    return transformers.CLIPTokenizerFast(
        tokenizer_file=CLIP_TOKENIZER, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", pad_token=pad_token, model_max_length=TOKENS)


def rerandomise_zeros(module, generator, label):
    """A weight matrix (or kernel) that is all zeros gets a seeded normal init, so that every layer acts."""
    for name, parameter in module.named_parameters():
        if parameter.dim() >= 2 and not bool(parameter.detach().abs().sum()):
            fan_in = parameter[0].numel()
            with torch.no_grad():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in ** 0.5)
            print(f"make_diffusers_bundles: {label}: {name} was zero-initialised; re-randomised", file=sys.stderr)


def relative(a, b):
    return float((a - b).norm() / b.norm())


def check_unet(unet, family, generator):
    """The UNet's output must depend on its sample, its timestep and its condition (and on SDXL's added ones)."""
    side, width = unet.config.sample_size, unet.config.cross_attention_dim

    def call(sample, t, cond, text=None):
        kwargs = {}
        if family == "sdxl":
            r = float(RESOLUTION)
            kwargs["added_cond_kwargs"] = {"text_embeds": text, "time_ids": torch.tensor([[r, r, 0.0, 0.0, r, r]])}
        with torch.no_grad():
            return unet(sample, torch.tensor([t]), cond, return_dict=False, **kwargs)[0]

    sample, sample2 = (torch.randn(1, 4, side, side, generator=generator) for _ in range(2))
    cond, cond2 = (torch.randn(1, TOKENS, width, generator=generator) for _ in range(2))
    text = text2 = None
    if family == "sdxl":
        dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        text, text2 = (torch.randn(1, dim, generator=generator) for _ in range(2))
    base = call(sample, 500, cond, text)
    changes = {"sample": relative(call(sample2, 500, cond, text), base),
               "timestep": relative(call(sample, 100, cond, text), base),
               "condition": relative(call(sample, 500, cond2, text), base)}
    if family == "sdxl":
        changes["text_embeds"] = relative(call(sample, 500, cond, text2), base)
    spread = float(base.std())
    print(f"make_diffusers_bundles: {family} unet: output std {spread:.3g}; relative change of the output when "
          "changing " + ", ".join(f"{key} {value:.3g}" for key, value in changes.items()), file=sys.stderr)
    if spread < 1e-3 or min(changes.values()) < 1e-3:
        raise SystemExit(f"make_diffusers_bundles: the {family} UNet's output is degenerate")


def build(family, diffusers, transformers, seed):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    if family == "sd1":
        unet = diffusers.UNet2DConditionModel(**SD1_UNET)
        vae = diffusers.AutoencoderKL(**SD1_VAE)
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD1_TEXT))
        parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    else:
        unet = diffusers.UNet2DConditionModel(**SDXL_UNET)
        vae = diffusers.AutoencoderKL(**SDXL_VAE)
        text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SDXL_TEXT))
        text_encoder_2 = transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**SDXL_TEXT_2))
        parts = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    for label, module in parts.items():
        rerandomise_zeros(module, generator, f"{family} {label}")
        module.eval()
    check_unet(unet, family, generator)
    if family == "sd1":
        scheduler = diffusers.DDIMScheduler.from_config(SD1_SCHEDULER)
        return diffusers.StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer(transformers, "<|endoftext|>"), unet=unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    return diffusers.StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer(transformers, "<|endoftext|>"), tokenizer_2=tokenizer(transformers, "!"),
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)


# The tokenizers the package ships (src/tokenizer.ts, packagedTokenizers): CLIP's vocabulary and each one's pad id.
PACKAGED_TOKENIZERS = {"clip-vit-large-patch14": 49407, "clip-vit-bigg-14": 0}


def name_packaged_tokenizers(out, manifest):
    """Replaces the exported tokenizer JSONs by the names of the packaged tokenizers they equal (CLIP's vocabulary
    and merges, the same pad id), so that the bundle needs no 1.7 MB file of its own; rewrites the manifest."""
    with open(CLIP_TOKENIZER, encoding="utf-8") as file:
        clip = json.load(file)["model"]
    for role in ("tokenizer", "tokenizer_2"):
        if role not in manifest["files"]:
            continue
        path = os.path.join(out, manifest["files"][role])
        with open(path, encoding="utf-8") as file:
            exported = json.load(file)
        merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in exported["model"]["merges"]]
        if exported["model"]["vocab"] != clip["vocab"] or merges != clip["merges"]:
            raise SystemExit(f"make_diffusers_bundles: {path} is not CLIP's vocabulary")
        pad_id = exported["padding"]["pad_id"]
        manifest["files"][role] = next(name for name, pad in PACKAGED_TOKENIZERS.items() if pad == pad_id)
        os.remove(path)
    manifest["sha256"] = file_digests(out, manifest["files"])
    with open(os.path.join(out, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")


def compiled_twin(family, pipelines, out_root, seed):
    """<out>/diffusers-<family>-pt2: the bundle with its UNet compiled (export_sd.py --format pt2 --modules unet), its
    other modules the TorchScript bundle's; for comparing the two formats on machines without diffusers."""
    bundle = os.path.join(out_root, f"diffusers-{family}")
    twin = f"{bundle}-pt2"
    shutil.rmtree(twin, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        cache = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=os.path.join(scratch, "inductor"))
        exported = os.path.join(scratch, "bundle")
        subprocess.run([sys.executable, EXPORT, "--model", os.path.join(pipelines, family), "--out", exported,
                        "--device", "cpu", "--dtype", "float32", "--format", "pt2", "--cpu-isa", "avx2",
                        "--max-batch", "16", "--modules", "unet", "--name", f"easyinv/diffusers-{family}", "--seed", str(seed)],
                       check=True, env=cache)
        with open(os.path.join(exported, "manifest.json")) as file:
            compiled = json.load(file)
        shutil.copytree(bundle, twin)
        os.remove(os.path.join(twin, "unet.pt"))
        shutil.copy(os.path.join(exported, "unet.pt2"), twin)
    with open(os.path.join(twin, "manifest.json")) as file:
        manifest = json.load(file)
    manifest["name"] = f"easyinv/diffusers-{family}-pt2"
    manifest["files"]["unet"] = "unet.pt2"
    manifest["check"]["unet"] = compiled["check"]["unet"]
    manifest["export"].update(format="pt2", batch=compiled["export"]["batch"], cpu_isa=compiled["export"]["cpu_isa"])
    manifest["sha256"] = file_digests(twin, manifest["files"])
    with open(os.path.join(twin, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")


def show_buffers(path):
    module = torch.jit.load(path)
    buffers = [f"{name} {tuple(buffer.shape)} {buffer.dtype}" for name, buffer in module.named_buffers()]
    print(f"make_diffusers_bundles: {os.path.relpath(path, REPO)} buffers: " + "; ".join(buffers))
    positions = [buffer for name, buffer in module.named_buffers() if name.endswith("position_ids")]
    if not positions or any(buffer.dtype != torch.int64 for buffer in positions):
        raise SystemExit(f"make_diffusers_bundles: {path}: no int64 position_ids buffer")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", default=None,
                        help="folder to keep the diffusers pipelines in (<folder>/sd1, <folder>/sdxl) for "
                             "test/python/reference_diffusers.py (default: a temporary folder, removed)")
    parser.add_argument("--out", default=WEIGHTS, help="where the bundles go (default: the weights folder)")
    parser.add_argument("--families", default="sd1,sdxl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compiled-twins", default="",
                        help="families whose bundle also gets a twin with a compiled .pt2 UNet, diffusers-<family>-pt2 "
                             "(minutes each; the committed one is sd1's)")
    args = parser.parse_args(argv)
    try:
        import diffusers
        import transformers
    except ImportError as error:
        raise SystemExit(f"make_diffusers_bundles: {error.name} is missing: pip install transformers safetensors "
                         "huggingface-hub, and PYTHONPATH=<diffusers checkout>/src")
    print(f"make_diffusers_bundles: diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}", file=sys.stderr)
    pipelines = args.pipelines or tempfile.mkdtemp(prefix="easyinv-pipelines-")
    try:
        for family in args.families.split(","):
            folder = os.path.join(pipelines, family)
            pipe = build(family, diffusers, transformers, args.seed)
            shutil.rmtree(folder, ignore_errors=True)
            pipe.save_pretrained(folder, safe_serialization=True)
            out = os.path.join(args.out, f"diffusers-{family}")
            shutil.rmtree(out, ignore_errors=True)  # no merge with an earlier export
            subprocess.run([sys.executable, EXPORT, "--model", folder, "--out", out, "--device", "cpu",
                            "--dtype", "float32", "--name", f"easyinv/diffusers-{family}", "--seed", str(args.seed)],
                           check=True)
            with open(os.path.join(out, "manifest.json")) as file:
                manifest = json.load(file)
            for name in manifest["files"].values():
                if name.endswith(".pt"):
                    strip_sources(os.path.join(out, name))
            name_packaged_tokenizers(out, manifest)  # also rewrites the manifest, with the stripped files' SHA-256
            for name in ("text_encoder", "text_encoder_2"):
                if name in manifest["files"]:
                    show_buffers(os.path.join(out, manifest["files"][name]))
            sizes = {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}
            print(f"make_diffusers_bundles: {family}: {sum(sizes.values())} bytes: {sizes}")
            if family in args.compiled_twins.split(","):
                compiled_twin(family, pipelines, args.out, args.seed)
    finally:
        if args.pipelines is None:
            shutil.rmtree(pipelines, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
