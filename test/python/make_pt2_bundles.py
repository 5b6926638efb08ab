#!/usr/bin/env python3
"""Compiles the .pt2 twins of the committed bundles weights/test-sd1, test-sdxl (for the tests of compiled bundles) and
tiny-sd1-256 (for the benchmark): the same modules (test/python/make_test_bundles.py's and training/models.py's
classes, with the weights of the committed TorchScript files)
through tools/export_sd.py's torch.export + AOTInductor path, into <out>/<bundle>/ with the manifest's files
pointing at the .pt2 packages, each checked against the eager module and hashed as export_sd.py does. Needs PyTorch
>= 2.6 (the same version as the LibTorch easyinv links) and a C++ compiler; a few minutes per bundle on a CPU.

    python test/python/make_pt2_bundles.py --out build/pt2-bundles [--bundles test-sd1,test-sdxl,tiny-sd1-256]
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.join(REPO, "training"))

import export_sd  # noqa: E402
import make_test_bundles as modules  # noqa: E402
import models as trained  # noqa: E402

MAX_BATCH = 64


def eager_modules(bundle: str) -> dict:
    """The bundle's modules as make_test_bundles builds them, with the committed files' weights."""
    if bundle == "test-sd1":
        built = {"unet": modules.UNetSD1(context=32), "vae_encoder": modules.VaeEncoder(0.18215),
                 "vae_decoder": modules.VaeDecoder(0.18215), "text_encoder": modules.TextEncoderLast(32)}
    elif bundle == "test-sdxl":
        built = {"unet": modules.UNetSDXL(context=16 + 24, pooled=12), "vae_encoder": modules.VaeEncoder(0.13025),
                 "vae_decoder": modules.VaeDecoder(0.13025), "text_encoder": modules.TextEncoderPenultimate(16),
                 "text_encoder_2": modules.TextEncoderWithProjection(24, projection=12)}
    elif bundle == "tiny-sd1-256":
        built = {"unet": trained.UNet(), "vae_encoder": trained.VaeEncoder(), "vae_decoder": trained.VaeDecoder(),
                 "text_encoder": trained.TextEncoder()}
    else:
        raise SystemExit(f"make_pt2_bundles: unknown bundle {bundle}: test-sd1, test-sdxl or tiny-sd1-256")
    for role, module in built.items():
        saved = torch.jit.load(os.path.join(modules.WEIGHTS, bundle, f"{role}.pt")).state_dict()
        wanted = module.state_dict()  # TorchScript keeps non-persistent buffers (position_ids) too
        module.load_state_dict({key: value for key, value in saved.items() if key in wanted})
        module.eval()
    return built


def compile_bundle(bundle: str, out: str) -> None:
    with open(os.path.join(modules.WEIGHTS, bundle, "manifest.json")) as file:
        manifest = json.load(file)
    folder = os.path.join(out, bundle)
    os.makedirs(folder, exist_ok=True)
    spec = {"resolution": manifest["resolution"], "channels": manifest["latent"]["channels"],
            "latent_size": manifest["latent"]["size"], "scaling_factor": manifest["latent"]["scaling_factor"],
            "cond_shape": manifest["cond_shape"], "vocab_size": 49408}
    if manifest["family"] == "sdxl":
        spec["text_embeds_dim"], spec["time_ids"] = 12, 6
    generator = torch.Generator().manual_seed(0)
    check = {}
    for role, module in eager_modules(bundle).items():
        begin = time.time()
        path = os.path.join(folder, f"{role}.pt2")
        compiled = export_sd.compile_pt2(module, export_sd.example_inputs(role, spec, 2, "cpu", torch.float32, generator),
                                         path, MAX_BATCH, freeze=True)
        inputs = export_sd.example_inputs(role, spec, 3, "cpu", torch.float32, generator)
        check[role] = export_sd.check_trace(role, compiled, module, inputs, "float32")
        manifest["files"][role] = f"{role}.pt2"
        print(f"make_pt2_bundles: {bundle}/{role}.pt2 in {time.time() - begin:.0f} s, max |compiled - eager| "
              f"{check[role]:.1e}", file=sys.stderr)
    manifest.pop("mutual_attention_layers", None)  # compiled from example inputs without attention_sources
    manifest.update(name=f"{manifest['name']}-pt2", dtypes=["float32"], check=check,
                    export={"torch": torch.__version__, "format": "pt2", "batch": [1, MAX_BATCH]})
    manifest["sha256"] = export_sd.file_digests(folder, manifest["files"])
    export_sd.write_manifest(folder, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the compiled bundles")
    parser.add_argument("--bundles", default="test-sd1", help="comma-separated: test-sd1, test-sdxl, tiny-sd1-256")
    args = parser.parse_args()
    for bundle in args.bundles.split(","):
        compile_bundle(bundle, args.out)


if __name__ == "__main__":
    main()
