#!/usr/bin/env python3
"""Reference inversions computed by diffusers itself, on the tiny pipelines of test/python/make_diffusers_bundles.py,
for comparing easyinv's bundles (weights/diffusers-sd1, weights/diffusers-sdxl) against diffusers.

    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python test/python/make_diffusers_bundles.py \\
        --pipelines <pipelines>
    PYTHONPATH=<diffusers checkout>/src HF_HUB_OFFLINE=1 python test/python/reference_diffusers.py \\
        --pipelines <pipelines> --out weights/test/diffusers-reference.safetensors --check-bundles weights

Everything runs in float32 on the CPU with diffusers' own classes: the pipeline's encode_prompt (SD 1.x:
StableDiffusionPipeline; SDXL: StableDiffusionXLPipeline, whose config says force_zeros_for_empty_prompt, so the
unconditional half is zeros, plus its _get_add_time_ids with original (h, w), crop (0, 0), target (h, w) in
pixels), DDIMInverseScheduler.from_config(pipe.scheduler.config) for the inversion and
DDIMScheduler.from_config(pipe.scheduler.config) for the reconstruction, and the loop of diffusers' own inverting
pipelines (StableDiffusionPix2PixZeroPipeline.invert, StableDiffusionDiffEditPipeline.invert): for t in
inverse.timesteps: eps = unet(z, t); z = inverse.step(eps, t, z). Classifier-free guidance as the pipelines do it:
one batched call on [uncond; cond], eps = eps_u + w (eps_c - eps_u); w = 1 calls the UNet on the condition alone.

Methods: "ddim" (plain DDIM inversion) and "easyinv" (SPEC section 4: after inversion step i, 0-based of N, gives
z_i, if (start + len) N > i > start N and i > 0, then z_i <- eta z_i + (1 - eta) z_{i-1}, the blended z_i being
what the next step starts from; sd1 eta 0.5, start 0.05, len 0.2; sdxl eta 0.8, start 0.85, len 0.1). Each case
also reconstructs: DDIM sampling (eta 0) from its z_T with the same N, prompt and guidance.

Cases: family sd1 / sdxl x method x guidance 1 / 5 x prompt "" / "a photograph of an astronaut riding a horse"
x N 10 / 50. The output .safetensors holds
  latent                                    the clean input latent z0 [1, 4, 16, 16] (scaled, as the UNet sees it)
  <family>/<method>/g<w>/<empty|prompt>/N<n>/zT   the inverted latent
  <family>/<method>/g<w>/<empty|prompt>/N<n>/z0   its reconstruction
  <family>/embeds/<empty|prompt>            encode_prompt's prompt_embeds [1, 77, D]
  <family>/pooled/<empty|prompt>            (sdxl) pooled prompt embeds; sdxl/time_ids [1, 6]
and a JSON of the same name (.json) the settings, versions, timesteps, EasyInv's blended steps and the floors.

The floor: the whole computation runs twice, with torch.set_num_threads(1) (the stored results) and with 2
threads; the relative difference ||a - b|| / ||b|| of z_T (and of z0) per case is what any comparison can expect
at best from reordered float32 sums alone.

--check-bundles <weights folder> also runs SPEC section 4 (abar in float64, as easyinv computes it) over the
exported TorchScript modules and tokenizers of <weights folder>/diffusers-<family> and prints its relative
difference from diffusers per case: export and formulas together, without the library.

--latent FILE reads z0 from a .safetensors file (key "latent", shape [1, 4, h, w]); without it z0 is seeded
normal noise of the bundles' latent size.
"""
import argparse
import json
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = {"empty": "", "prompt": "a photograph of an astronaut riding a horse"}
GUIDANCES = (1.0, 5.0)
STEPS = (10, 50)
METHODS = ("ddim", "easyinv")
EASYINV = {"sd1": {"eta": 0.5, "start": 0.05, "len": 0.2}, "sdxl": {"eta": 0.8, "start": 0.85, "len": 0.1}}


def blended_steps(family, steps):
    p = EASYINV[family]
    return [i for i in range(steps) if (p["start"] + p["len"]) * steps > i > p["start"] * steps and i > 0]


class Family:
    """A loaded diffusers pipeline and its conditions, computed with the pipeline's own encode_prompt."""

    def __init__(self, diffusers, family, folder):
        self.family = family
        cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
        self.pipe = cls.from_pretrained(folder, torch_dtype=torch.float32)
        self.pipe.set_progress_bar_config(disable=True)
        self.unet = self.pipe.unet.eval()
        config = self.pipe.scheduler.config
        self.inverse = diffusers.DDIMInverseScheduler.from_config(config)
        self.sampler = diffusers.DDIMScheduler.from_config(config)
        self.resolution = self.unet.config.sample_size * self.pipe.vae_scale_factor

    def condition(self, prompt, guidance):
        """(encoder_hidden_states, added_cond_kwargs or None, pieces for the output file), [uncond; cond] when
        guidance > 1, as the pipelines build them."""
        cfg = guidance > 1
        with torch.no_grad():
            if self.family == "sd1":
                cond, uncond = self.pipe.encode_prompt(prompt, "cpu", 1, cfg, negative_prompt=None)
                states = torch.cat([uncond, cond]) if cfg else cond
                return states, None, {"embeds": cond}
            cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
                prompt=prompt, prompt_2=None, device="cpu", num_images_per_prompt=1,
                do_classifier_free_guidance=cfg, negative_prompt=None)
            size = (self.resolution, self.resolution)
            time_ids = self.pipe._get_add_time_ids(
                size, (0, 0), size, dtype=cond.dtype,
                text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim)
        if cfg:
            states, text = torch.cat([uncond, cond]), torch.cat([uncond_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        else:
            states, text = cond, pooled
        return states, {"text_embeds": text, "time_ids": time_ids}, {"embeds": cond, "pooled": pooled,
                                                                      "time_ids": time_ids[-1:]}

    def eps(self, z, t, states, added, guidance):
        cfg = guidance > 1
        model_input = torch.cat([z] * 2) if cfg else z
        with torch.no_grad():
            out = self.unet(model_input, t, encoder_hidden_states=states, added_cond_kwargs=added,
                            return_dict=False)[0]
        if not cfg:
            return out
        uncond, cond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    def run(self, z0, method, guidance, prompt, steps):
        states, added, _ = self.condition(prompt, guidance)
        blend = set(blended_steps(self.family, steps)) if method == "easyinv" else set()
        eta = EASYINV[self.family]["eta"]
        self.inverse.set_timesteps(steps)
        z = z0
        for i, t in enumerate(self.inverse.timesteps):
            previous = z
            z = self.inverse.step(self.eps(z, t, states, added, guidance), t, z).prev_sample
            if i in blend:
                z = eta * z + (1 - eta) * previous
        z_t = z
        self.sampler.set_timesteps(steps)
        for t in self.sampler.timesteps:
            z = self.sampler.step(self.eps(z, t, states, added, guidance), t, z, eta=0.0).prev_sample
        return z_t, z


def case_key(family, method, guidance, prompt_name, steps):
    return f"{family}/{method}/g{guidance:g}/{prompt_name}/N{steps}"


def run_all(families, z0, threads):
    torch.set_num_threads(threads)
    results = {}
    for family, model in families.items():
        for method in METHODS:
            for guidance in GUIDANCES:
                for prompt_name, prompt in PROMPTS.items():
                    for steps in STEPS:
                        key = case_key(family, method, guidance, prompt_name, steps)
                        results[key + "/zT"], results[key + "/z0"] = model.run(z0, method, guidance, prompt, steps)
    return results


def relative(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---------------------------------------------------------------------------------------------------------------
# SPEC section 4 over the exported bundle (no diffusers in the loop)


def spec_alpha_bars(config):
    count, start, end = config["num_train_timesteps"], config["beta_start"], config["beta_end"]
    fraction = torch.arange(count, dtype=torch.float64) / (count - 1)
    if config["beta_schedule"] == "scaled_linear":
        betas = (start ** 0.5 + fraction * (end ** 0.5 - start ** 0.5)) ** 2
    else:
        betas = start + fraction * (end - start)
    return torch.cumprod(1 - betas, dim=0)


# The tokenizers the package ships (src/tokenizer.ts): CLIP's vocabulary with each text encoder's pad token.
PACKAGED_TOKENIZERS = {"clip-vit-large-patch14": ("<|endoftext|>", 49407), "clip-vit-bigg-14": ("!", 0)}


def load_tokenizer(tokenizers, folder, entry):
    """A bundle's tokenizer as diffusers calls it (padded and truncated to 77): a packaged name or a file."""
    if entry not in PACKAGED_TOKENIZERS:
        return tokenizers.Tokenizer.from_file(os.path.join(folder, entry))
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(REPO, "weights", "clip", "tokenizer.json"))
    pad_token, pad_id = PACKAGED_TOKENIZERS[entry]
    tokenizer.enable_padding(length=77, pad_id=pad_id, pad_token=pad_token)
    tokenizer.enable_truncation(77)
    return tokenizer


class Bundle:
    def __init__(self, folder):
        import tokenizers
        with open(os.path.join(folder, "manifest.json")) as file:
            self.manifest = json.load(file)
        files = self.manifest["files"]
        self.family = self.manifest["family"]
        self.unet = torch.jit.load(os.path.join(folder, files["unet"]))
        self.encoders = [(torch.jit.load(os.path.join(folder, files[name])), load_tokenizer(tokenizers, folder, files[role]))
                         for name, role in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
                         if name in files]
        self.abar = spec_alpha_bars(self.manifest["scheduler"])
        self.mutual_layers = self.manifest.get("mutual_attention_layers")

    def encode(self, prompt):
        states, pooled = [], None
        for encoder, tokenizer in self.encoders:
            ids = torch.tensor([tokenizer.encode(prompt).ids], dtype=torch.int64)
            with torch.no_grad():
                out = encoder(ids)
            if isinstance(out, tuple):
                out, pooled = out
            states.append(out)
        return torch.cat(states, dim=-1), pooled

    def condition(self, prompt, guidance):
        cond, pooled = self.encode(prompt)
        extra = ()
        if self.family == "sdxl":
            r = float(self.manifest["resolution"])
            time_ids = torch.tensor([[r, r, 0.0, 0.0, r, r]])
            if guidance > 1:  # force_zeros_for_empty_prompt
                cond, pooled = torch.cat([torch.zeros_like(cond), cond]), torch.cat([torch.zeros_like(pooled), pooled])
                time_ids = torch.cat([time_ids, time_ids])
            return cond, (pooled, time_ids)
        if guidance > 1:
            cond = torch.cat([self.encode("")[0], cond])
        return cond, extra

    def eps(self, z, t, cond, extra, guidance):
        cfg = guidance > 1
        model_input = torch.cat([z] * 2) if cfg else z
        rows = model_input.shape[0]
        if self.mutual_layers:  # every row attends to itself: the plain UNet
            extra = (*extra, torch.arange(rows)[:, None].expand(rows, self.mutual_layers))
        with torch.no_grad():
            out = self.unet(model_input, torch.full((rows,), int(t), dtype=torch.int64), cond, *extra)
        if not cfg:
            return out
        uncond, c = out.chunk(2)
        return uncond + guidance * (c - uncond)

    def level(self, t):
        config = self.manifest["scheduler"]
        if t >= 0:
            return float(self.abar[t])
        return 1.0 if config["set_alpha_to_one"] else float(self.abar[0])

    @staticmethod
    def move(z, eps, a_from, a_to):
        x0 = (z - (1 - a_from) ** 0.5 * eps) / a_from ** 0.5
        return a_to ** 0.5 * x0 + (1 - a_to) ** 0.5 * eps

    def run(self, z0, method, guidance, prompt, steps):
        config = self.manifest["scheduler"]
        assert config["timestep_spacing"] == "leading"
        delta = config["num_train_timesteps"] // steps
        sampling = [i * delta + config["steps_offset"] for i in range(steps)][::-1]
        cond, extra = self.condition(prompt, guidance)
        blend = set(blended_steps(self.family, steps)) if method == "easyinv" else set()
        eta = EASYINV[self.family]["eta"]
        z = z0
        for i, t in enumerate(sampling[::-1]):
            previous = z
            z = self.move(z, self.eps(z, t, cond, extra, guidance), self.level(t - delta), self.level(t))
            if i in blend:
                z = eta * z + (1 - eta) * previous
        z_t = z
        for t in sampling:
            z = self.move(z, self.eps(z, t, cond, extra, guidance), self.level(t), self.level(t - delta))
        return z_t, z


# ---------------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="diffusers' own DDIM inversion, EasyInv and reconstruction on the "
                                                 "tiny pipelines of make_diffusers_bundles.py")
    parser.add_argument("--pipelines", required=True, help="folder holding sd1/ and sdxl/ diffusers pipelines")
    parser.add_argument("--out", required=True, help=".safetensors file to write (and a .json beside it)")
    parser.add_argument("--latent", default=None, help=".safetensors with key 'latent' [1, 4, h, w]")
    parser.add_argument("--families", default="sd1,sdxl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-bundles", default=None,
                        help="weights folder holding diffusers-<family> bundles: also run SPEC section 4 over them")
    args = parser.parse_args(argv)
    try:
        import diffusers
        import transformers
        from safetensors.torch import load_file, save_file
    except ImportError as error:
        raise SystemExit(f"reference_diffusers: {error.name} is missing: pip install transformers safetensors "
                         "huggingface-hub, and PYTHONPATH=<diffusers checkout>/src")
    torch.set_num_threads(1)
    families = {family: Family(diffusers, family, os.path.join(args.pipelines, family))
                for family in args.families.split(",")}
    sides = {model.unet.config.sample_size for model in families.values()}
    if args.latent:
        z0 = load_file(args.latent)["latent"].float().contiguous()
    else:
        if len(sides) != 1:
            raise SystemExit("reference_diffusers: the pipelines' latent sizes differ: pass --latent")
        side = sides.pop()
        z0 = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(args.seed))

    tensors = {"latent": z0}
    for family, model in families.items():
        for prompt_name, prompt in PROMPTS.items():
            _, _, pieces = model.condition(prompt, 1.0)
            tensors[f"{family}/embeds/{prompt_name}"] = pieces["embeds"]
            if "pooled" in pieces:
                tensors[f"{family}/pooled/{prompt_name}"] = pieces["pooled"]
                tensors[f"{family}/time_ids"] = pieces["time_ids"]
    results = run_all(families, z0, threads=1)
    tensors.update(results)
    again = run_all(families, z0, threads=2)
    torch.set_num_threads(1)
    floor = {key: relative(again[key], results[key]) for key in results}
    for key in sorted(k for k in results if k.endswith("/zT")):
        base = key[:-3]
        print(f"reference_diffusers: floor (1 vs 2 threads) {base}: zT {floor[key]:.3g}, z0 {floor[base + '/z0']:.3g}"
              f"; reconstruction error ||z0' - z0|| / ||z0|| {relative(results[base + '/z0'], z0):.3g}")
    print(f"reference_diffusers: floor max: zT {max(v for k, v in floor.items() if k.endswith('/zT')):.3g}, "
          f"z0 {max(v for k, v in floor.items() if k.endswith('/z0')):.3g}")

    spec = {}
    if args.check_bundles:
        for family in families:
            bundle = Bundle(os.path.join(args.check_bundles, f"diffusers-{family}"))
            for prompt_name, prompt in PROMPTS.items():
                cond, _ = bundle.encode(prompt)
                spec[f"{family}/embeds/{prompt_name}"] = relative(cond, tensors[f"{family}/embeds/{prompt_name}"])
            for method in METHODS:
                for guidance in GUIDANCES:
                    for prompt_name, prompt in PROMPTS.items():
                        for steps in STEPS:
                            key = case_key(family, method, guidance, prompt_name, steps)
                            z_t, z = bundle.run(z0, method, guidance, prompt, steps)
                            spec[key + "/zT"] = relative(z_t, results[key + "/zT"])
                            spec[key + "/z0"] = relative(z, results[key + "/z0"])
        for key, value in spec.items():
            print(f"reference_diffusers: SPEC over the bundle vs diffusers {key}: {value:.3g}")

    save_file({key: value.contiguous() for key, value in tensors.items()}, args.out)
    settings = {
        "versions": {"diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        "dtype": "float32", "device": "cpu", "seed": args.seed, "latent": args.latent is not None and "file" or
        f"torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed({args.seed}))",
        "prompts": PROMPTS, "guidances": GUIDANCES, "steps": STEPS, "methods": METHODS, "easyinv": EASYINV,
        "families": {family: {
            "resolution": model.resolution,
            "scheduler": {key: model.pipe.scheduler.config[key] for key in
                          ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset",
                           "set_alpha_to_one", "timestep_spacing")},
            "inverse_timesteps": {steps: (model.inverse.set_timesteps(steps) or model.inverse.timesteps.tolist())
                                  for steps in STEPS},
            "sampling_timesteps": {steps: (model.sampler.set_timesteps(steps) or model.sampler.timesteps.tolist())
                                   for steps in STEPS},
            "easyinv_blended_steps": {steps: blended_steps(family, steps) for steps in STEPS},
        } for family, model in families.items()},
        "floor_threads_1_vs_2": floor,
        "spec_over_bundle_vs_diffusers": spec,
    }
    with open(os.path.splitext(args.out)[0] + ".json", "w") as file:
        json.dump(settings, file, indent=1)
        file.write("\n")
    print(f"reference_diffusers: wrote {args.out} ({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
