#!/usr/bin/env python3
"""Reference edits computed by MasaCtrl's own code (Cao et al., ICCV 2023: MutualSelfAttentionControl registered
with regiter_attention_editor_diffusers; SD 1.x through its MasaCtrlPipeline, SDXL through diffusers'
StableDiffusionXLPipeline as its run_synthesis_sdxl.py does) on the tiny pipelines of
test/python/make_diffusers_bundles.py, for comparing easyinv's edit() on weights/diffusers-sd1 and -sdxl.

    git clone https://github.com/TencentARC/MasaCtrl <masactrl checkout>
    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python test/python/make_diffusers_bundles.py \\
        --pipelines <pipelines>
    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python test/python/reference_masactrl.py \\
        --masactrl <masactrl checkout> --pipelines <pipelines> --out weights/test/masactrl-reference.safetensors

The checkout's modules are imported from it (this file holds none of their code). cv2, torchvision and
pytorch_lightning, which those modules import for image files and seeding only, are stood in by empty modules when
they are not installed. The pipelines' scheduler is DDIMScheduler.from_config(pipe.scheduler.config) (the bundles'
schedule); MasaCtrlPipeline's latent2image is replaced by the identity so that its __call__ returns the latents.

Everything runs in float32 on the CPU, guidance 7.5, the unconditional prompt "" (SDXL: zeros, as its pipeline's
force_zeros_for_empty_prompt says). The batch is [source, target], both from z_T.

Cases: family x start ("fixed": seeded normal z_T; "inverted": MasaCtrlPipeline.invert of the astronaut photo's
VAE latent with the source prompt, guidance 7.5, whose per-step latents can pin the source branch: SD 1.x only,
MasaCtrl's ref_intermediate_latents) x control ("plain": MasaCtrl's AttentionBase, the two-prompt run;
"masactrl-<step>-<layer>": MutualSelfAttentionControl(step, layer)) x N 10 / 50 x pinned or not. Stored:
  <family>/<start>/N<n>/zT                    z_T [1, 4, 16, 16]
  <family>/inverted/N<n>/latents              (sd1) the inversion's latents z_0 .. z_N [N + 1, 4, 16, 16]
  <family>/<start>/N<n>/<control>[/pinned]    the final latents [2, 4, 16, 16]: source row, target row
and a JSON beside it: settings, versions, and per case the floor (the relative difference ||a - b|| / ||b|| of the
target row between 1 and 2 threads: what any comparison can expect at best from reordered float32 sums).
"""
import argparse
import importlib
import json
import os
import sys
import types

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE_PROMPT = "a photo of a peach"
TARGET_PROMPT = "a photo of a football"
GUIDANCE = 7.5
STEPS = (10, 50)
CONTROLS = {"sd1": ((4, 10), (2, 6)), "sdxl": ((4, 44), (2, 30))}  # (start_step, start_layer)
LAYERS = {"sd1": "SD", "sdxl": "SDXL"}


def stand_in_missing(*names):
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__getattr__ = lambda attribute: None  # noqa: E731: only image I/O and seeding use them
            sys.modules[name] = module
            for child in ("utils", "io"):
                sys.modules[f"{name}.{child}"] = module


def photo_latent(vae, side):
    from PIL import Image
    image = Image.open(os.path.join(REPO, "weights", "photos", "astronaut.png")).convert("RGB")
    image = image.resize((side, side), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image).copy()).float().permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor


class Family:
    def __init__(self, diffusers, masactrl, family, folder):
        self.family, self.masactrl = family, masactrl
        if family == "sd1":
            self.pipe = masactrl.diffuser_utils.MasaCtrlPipeline.from_pretrained(folder, dtype=torch.float32)
            self.pipe.latent2image = lambda latents, return_type="np": latents
        else:
            self.pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, dtype=torch.float32)
        self.pipe.scheduler = diffusers.DDIMScheduler.from_config(self.pipe.scheduler.config)
        self.pipe.set_progress_bar_config(disable=True)
        self.side = self.pipe.unet.config.sample_size * 8

    def editor(self, control, steps):
        if control == "plain":
            return self.masactrl.masactrl_utils.AttentionBase()
        _, step, layer = control.split("-")
        return self.masactrl.masactrl.MutualSelfAttentionControl(int(step), int(layer), total_steps=steps,
                                                                 model_type=LAYERS[self.family])

    def edit(self, z_t, control, steps, pinned=None):
        self.masactrl.masactrl_utils.regiter_attention_editor_diffusers(self.pipe, self.editor(control, steps))
        latents = z_t.expand(2, -1, -1, -1)
        prompts = [SOURCE_PROMPT, TARGET_PROMPT]
        with torch.no_grad():
            if self.family == "sd1":
                return self.pipe(prompts, height=self.side, width=self.side, num_inference_steps=steps,
                                 guidance_scale=GUIDANCE, latents=latents, ref_intermediate_latents=pinned)
            return self.pipe(prompt=prompts, height=self.side, width=self.side, num_inference_steps=steps,
                             guidance_scale=GUIDANCE, latents=latents.clone(), output_type="latent").images

    def invert(self, z0, steps):
        """MasaCtrlPipeline.invert from a latent (its image2latent replaced by the given latent): z_T, z_0..z_N."""
        self.masactrl.masactrl_utils.regiter_attention_editor_diffusers(
            self.pipe, self.masactrl.masactrl_utils.AttentionBase())
        self.pipe.image2latent = lambda image: z0
        with torch.no_grad():
            z_t, latents = self.pipe.invert(torch.zeros(1, 3, self.side, self.side), SOURCE_PROMPT,
                                            num_inference_steps=steps, guidance_scale=GUIDANCE,
                                            return_intermediates=True)
        return z_t, torch.cat(latents)


def relative(a, b):
    return float((a - b).norm() / b.norm())


def cases(family):
    for start in ("fixed", "inverted") if family == "sd1" else ("fixed",):
        for steps in STEPS:
            for control in ("plain", *(f"masactrl-{s}-{l}" for s, l in CONTROLS[family])):
                for pinned in (False, True) if start == "inverted" else (False,):
                    yield start, steps, control, pinned


def main(argv=None):
    parser = argparse.ArgumentParser(description="MasaCtrl's own edits on the tiny pipelines")
    parser.add_argument("--masactrl", required=True, help="a checkout of github.com/TencentARC/MasaCtrl")
    parser.add_argument("--pipelines", required=True, help="folder holding sd1/ and sdxl/ diffusers pipelines")
    parser.add_argument("--out", required=True, help=".safetensors file to write (and a .json beside it)")
    parser.add_argument("--families", default="sd1,sdxl", help="the families to (re)do; an existing --out keeps the others")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import diffusers
    import transformers
    from safetensors.torch import save_file
    stand_in_missing("cv2", "torchvision", "pytorch_lightning")  # after diffusers, which probes for torchvision
    sys.path.insert(0, args.masactrl)
    masactrl = types.SimpleNamespace(**{name: importlib.import_module(f"masactrl.{name}")
                                        for name in ("diffuser_utils", "masactrl", "masactrl_utils")})

    tensors, floors = {}, {}
    if os.path.exists(args.out):  # --families redoes those families and keeps the others' cases
        from safetensors.torch import load_file
        with open(os.path.splitext(args.out)[0] + ".json") as file:
            floors = {key: value for key, value in json.load(file)["floors"].items()
                      if key.split("/")[0] not in args.families.split(",")}
        tensors = {key: value for key, value in load_file(args.out).items()
                   if key.split("/")[0] not in args.families.split(",")}
    for family in args.families.split(","):
        model = Family(diffusers, masactrl, family, os.path.join(args.pipelines, family))
        side = model.pipe.unet.config.sample_size
        starts = {}
        for steps in STEPS:
            fixed = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(args.seed + steps))
            starts[("fixed", steps)] = (fixed, None)
            if family == "sd1":
                torch.set_num_threads(1)
                starts[("inverted", steps)] = model.invert(photo_latent(model.pipe.vae, model.side), steps)
        for (start, steps), (z_t, latents) in starts.items():
            tensors[f"{family}/{start}/N{steps}/zT"] = z_t.contiguous()
            if latents is not None:
                tensors[f"{family}/{start}/N{steps}/latents"] = latents.contiguous()
        for start, steps, control, pinned in cases(family):
            z_t, latents = starts[(start, steps)]
            runs = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                runs.append(model.edit(z_t, control, steps, list(latents[:, None]) if pinned else None))
            key = f"{family}/{start}/N{steps}/{control}" + ("/pinned" if pinned else "")
            tensors[key] = runs[0].contiguous()
            floors[key] = relative(runs[1][1], runs[0][1])
            print(f"reference_masactrl: {key}: target floor {floors[key]:.2e}", file=sys.stderr)
    save_file(tensors, args.out)
    settings = {"source_prompt": SOURCE_PROMPT, "target_prompt": TARGET_PROMPT, "guidance": GUIDANCE,
                "controls": {family: [list(c) for c in CONTROLS[family]] for family in CONTROLS},
                "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                             "transformers": transformers.__version__},
                "floors": floors}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as file:
        json.dump(settings, file, indent=2)
        file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
