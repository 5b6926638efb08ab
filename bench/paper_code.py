#!/usr/bin/env python3
"""The EasyInv authors' own notebook code, run on the small diffusers pipelines of
test/python/make_diffusers_bundles.py, for comparing easyinv's `variant: 'notebook'` with it (bench/paper-code.js,
test/paper-code.test.ts, docs/paper-code.md).

    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python bench/paper_code.py --authors <EasyInv checkout> \\
        --pipelines <pipelines> --out weights/test/paper-code-reference.safetensors

Their files are imported from the --authors checkout (github.com/potato-kitty/EasyInv), never copied:
  SD-1   utilsV14.invert(model, image, [prompt], 1, num_inference_steps=N, guidance_scale=7.5, opt_invert=True), as
         by_referenceSDV1-4.ipynb runs it (through text2image_ldm_stable), over SD-1.4's PNDMScheduler;
  SDXL   EasyInv_SDXL/utils.py SDXL(pipe, prompt, height=512, width=512, num_inference_steps=N, real_img=image), as
         EasyInv_SDXL/by_reference.ipynb runs it (through text2image_ldm_stable), with the notebook's DDIMScheduler.
Guidance is theirs: 7.5 (SD-1; their invert defines no context for guidance <= 1) and SDXL()'s default 5.0.

Adaptations, all outside their files:
  1. CPU and float32 (their notebooks load SD-1 in float16 on CUDA, SDXL in float32 on CUDA).
  2. The small pipelines instead of CompVis/stable-diffusion-v1-4 and stable-diffusion-xl-base-1.0; SD-1's
     scheduler is PNDMScheduler with SD-1.4's scheduler config (below), as the checkpoint ships it.
  3. Their image2latent is replaced by the identity and the clean latent z0 passed as the image: both sides start
     from the same z0 (SDXL's image2latent scales by 0.18215, a slip docs/paper-code.md treats on its own).
  4. Their module-level `device` (set by text2image_ldm_stable, which is not run) is set to the CPU.
  5. SD-1: their code unpacks four outputs from the UNet (their patched diffusers, replace_diffuser/, returns
     attention maps too); the UNet is wrapped to return (output, None, None, None). Their attention patch
     (register_attention_control, called by text2image_ldm_stable) is not applied: it computes plain attention
     (its context[-2:] cut keeps the whole batch of 2) and matches no class of current diffusers anyway.
  6. Imports their code makes but the inversion does not use (cv2, IPython, tqdm.notebook, torchviz, sklearn,
     skimage) are stubbed when missing, tqdm.notebook always (it needs a notebook's widgets): its tqdm passes its
     iterable through. Their prints are silenced.
  7. SDXL: enable_vae_tiling() is not called (the inversion decodes nothing).

The output .safetensors holds `<family>/<empty|prompt>/N<n>/zT` per case; its .json the settings and versions.
z0 is the key "latent" of --latent (default weights/test/diffusers-reference.safetensors).
"""
import argparse
import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import subprocess
import sys
import types

import diffusers
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = {"empty": "", "prompt": "a photograph of an astronaut riding a horse"}
STEPS = {"sd1": (10, 50), "sdxl": (10, 20, 50)}
GUIDANCE = {"sd1": 7.5, "sdxl": 5.0}
# CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json (less clip_sample, which PNDMScheduler ignores)
SD14_PNDM = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                 set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)


def stub_missing_imports():
    def stub(name, always=False, **attributes):
        if not always and importlib.util.find_spec(name.split(".")[0]) is not None:
            return
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.__dict__.update(attributes)
        sys.modules[name] = module
        parent = name.rpartition(".")[0]
        if parent:
            sys.modules.setdefault(parent, types.ModuleType(parent))
            setattr(sys.modules[parent], name.rpartition(".")[2], module)

    stub("cv2")
    stub("IPython.display", display=print)
    stub("tqdm.notebook", always=True, tqdm=lambda iterable, **_: iterable)  # it needs a notebook's widgets
    stub("torchviz", make_dot=None)
    stub("sklearn.cluster", KMeans=None)
    stub("skimage.morphology")


def load_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.device = torch.device("cpu")
    module.image2latent = lambda model, image: image
    return module


def invert_sd1(authors, pipelines, z0, prompt, steps):
    from diffusers import PNDMScheduler
    utils = load_file(os.path.join(authors, "utilsV14.py"), "utilsV14")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(os.path.join(pipelines, "sd1"), dtype=torch.float32)
    unet = pipe.unet
    model = types.SimpleNamespace(
        unet=lambda *args, **kwargs: (unet(*args, **kwargs), None, None, None), scheduler=PNDMScheduler(**SD14_PNDM),
        tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, vae=pipe.vae, device=pipe.device)
    latent, _, _ = utils.invert(model, z0, [prompt], 1, num_inference_steps=steps, guidance_scale=GUIDANCE["sd1"], opt_invert=True)
    return latent, [int(t) for t in reversed(model.scheduler.timesteps)]


def invert_sdxl(authors, pipelines, z0, prompt, steps):
    from diffusers import DDIMScheduler
    utils = load_file(os.path.join(authors, "EasyInv_SDXL", "utils.py"), "easyinv_sdxl_utils")
    # as EasyInv_SDXL/by_reference.ipynb builds it
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = diffusers.DiffusionPipeline.from_pretrained(os.path.join(pipelines, "sdxl"), scheduler=scheduler, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    latent = utils.SDXL(pipe, prompt, height=utils.height, width=utils.width, num_inference_steps=steps, real_img=z0)
    return latent, [int(t) for t in reversed(pipe.scheduler.timesteps)]


def commit_of(folder):
    try:
        return subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_atomically(path, write):
    temporary = f"{path}.tmp-{os.getpid()}"
    write(temporary)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", required=True, help="a checkout of github.com/potato-kitty/EasyInv")
    parser.add_argument("--pipelines", required=True, help="the pipelines of make_diffusers_bundles.py --pipelines")
    parser.add_argument("--latent", default=os.path.join(REPO, "weights", "test", "diffusers-reference.safetensors"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--families", default="sd1,sdxl")
    args = parser.parse_args(argv)
    import transformers
    from safetensors.torch import load_file as read_tensors, save_file

    # the pipelines' modules are imported before the stubs exist, so that diffusers sees what is really installed
    for name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline", "PNDMScheduler", "DDIMScheduler"):
        getattr(diffusers, name)
    stub_missing_imports()
    torch.set_num_threads(1)
    z0 = read_tensors(args.latent)["latent"].float()
    invert = {"sd1": invert_sd1, "sdxl": invert_sdxl}
    tensors, timesteps = {}, {}
    for family in args.families.split(","):
        for key, prompt in PROMPTS.items():
            for steps in STEPS[family]:
                with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                    latent, used = invert[family](args.authors, args.pipelines, z0.clone(), prompt, steps)
                tensors[f"{family}/{key}/N{steps}/zT"] = latent.detach().contiguous()
                timesteps[f"{family}/N{steps}"] = used
                print(f"paper_code: {family} {key} N{steps}: |z_T| {float(latent.norm()):.6g}", file=sys.stderr)
    settings = {
        "authors": {"commit": commit_of(args.authors)},
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "prompts": PROMPTS, "steps": STEPS, "guidance": GUIDANCE, "inversion_timesteps": timesteps,
    }
    write_atomically(args.out, lambda path: save_file(tensors, path))
    json_path = os.path.splitext(args.out)[0] + ".json"

    def write_json(path):
        with open(path, "w") as file:
            json.dump(settings, file, indent=1)
            file.write("\n")
    write_atomically(json_path, write_json)
    print(f"paper_code: wrote {len(tensors)} tensors to {args.out} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
