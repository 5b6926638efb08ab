#!/usr/bin/env python3
"""Writes the bundle weights/tiny-sd1-256 from the trained checkpoints: TorchScript (torch.jit.script, float32, CPU)
files saved without debug records (tools/torchscript_file.py), and manifest.json with the measured scaling_factor.

    /usr/bin/python3 training/export.py [--vae /tmp/tiny-sd/vae_final.pt] [--unet /tmp/tiny-sd/unet.pt]
    /usr/bin/python3 training/export.py --from-bundle weights/tiny-sd1-256

The UNet's exported weights are its EMA; the text encoder is rebuilt from its seed (it is frozen random).
--from-bundle takes the weights, scaling factor and training record from an exported bundle instead of the
checkpoints: a re-export with the modules' current code (the UNet's mutual attention, say), the same weights.
Checks each file after saving: it loads, runs at the bundle's shapes and matches the Python module.
"""
import argparse
import json
import os
import sys

import torch

from models import ATTENTION_LAYERS, CONTEXT, TextEncoder, UNet, VaeDecoder, VaeEncoder, count

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tools"))
from torchscript_file import save_without_sources  # noqa: E402

SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1, "set_alpha_to_one": False, "timestep_spacing": "leading"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vae", default="/tmp/tiny-sd/vae_final.pt")
    parser.add_argument("--unet", default="/tmp/tiny-sd/unet.pt")
    parser.add_argument("--out", default=os.path.join(REPO, "weights", "tiny-sd1-256"))
    parser.add_argument("--description", default=None)
    parser.add_argument("--from-bundle", default=None, help="take the weights from this exported bundle instead")
    args = parser.parse_args()
    torch.set_num_threads(2)

    encoder, decoder, unet = VaeEncoder(), VaeDecoder(), UNet()
    modules = {"unet": unet, "vae_encoder": encoder, "vae_decoder": decoder}
    if args.from_bundle:
        with open(os.path.join(args.from_bundle, "manifest.json")) as file:
            source = json.load(file)
        modules["text_encoder"] = TextEncoder()
        for role, module in modules.items():
            saved = torch.jit.load(os.path.join(args.from_bundle, f"{role}.pt")).state_dict()
            wanted = module.state_dict()  # TorchScript keeps the non-persistent position_ids too
            module.load_state_dict({key: value for key, value in saved.items() if key in wanted})
        scale, training = source["latent"]["scaling_factor"], source["training"]
    else:
        vae, unet_checkpoint = torch.load(args.vae), torch.load(args.unet)
        encoder.load_state_dict(vae["encoder"]), decoder.load_state_dict(vae["decoder"])
        unet.load_state_dict(unet_checkpoint["ema"])
        torch.manual_seed(unet_checkpoint["text_seed"])
        modules["text_encoder"] = TextEncoder()
        scale = unet_checkpoint["scaling_factor"]
        training = {"vae_steps": [vae.get("stage1_step"), vae["step"]], "unet_steps": unet_checkpoint["step"],
                    "seed": unet_checkpoint["seed"], "text_encoder_seed": unet_checkpoint["text_seed"]}
    g = torch.Generator().manual_seed(0)
    examples = {
        "unet": (torch.randn(2, 4, 32, 32, generator=g), torch.tensor([1, 981]), torch.randn(2, 77, CONTEXT, generator=g)),
        "vae_encoder": (torch.rand(1, 3, 256, 256, generator=g) * 2 - 1,),
        "vae_decoder": (torch.randn(1, 4, 32, 32, generator=g) / scale,),
        "text_encoder": (torch.tensor([[49406, 320, 1125, 539, 320, 2368] + [49407] * 71]),),
    }
    os.makedirs(args.out, exist_ok=True)
    files = {}
    for role, module in modules.items():
        module.eval()
        path = os.path.join(args.out, f"{role}.pt")
        save_without_sources(torch.jit.script(module), path)
        loaded = torch.jit.load(path)
        with torch.no_grad():
            expected, got = module(*examples[role]), loaded(*examples[role])
        error = (expected - got).abs().max().item()
        assert error < 1e-4, (role, error)
        if role == "text_encoder":
            assert loaded.position_ids.dtype == torch.int64
        if role == "unet":  # mutual attention: the identity is the plain UNet to the bit; other sources change it
            identity = torch.arange(2).unsqueeze(1).repeat(1, ATTENTION_LAYERS)
            with torch.no_grad():
                assert torch.equal(loaded(*examples[role], identity), got)
                assert not torch.equal(loaded(*examples[role], torch.zeros_like(identity)), got)
        print(f"{role}: {count(module)} parameters, {os.path.getsize(path) / 1e6:.2f} MB, output "
              f"{list(got.shape)}, scripted vs eager max error {error:.1e}")
        files[role] = f"{role}.pt"
    files["tokenizer"] = "clip-vit-large-patch14"  # the package's CLIP tokenizer (src/tokenizer.ts)
    description = args.description or (
        "tiny latent diffusion model trained from scratch on CPU on scikit-image's sample photos (training/): "
        "a deterministic 8x conv autoencoder (4 latent channels), an SD-V1-style UNet (ResNet blocks, self- and "
        "cross-attention, 48/80/96 channels) trained for epsilon prediction on the scaled_linear schedule, and a "
        "small CLIP-like text encoder with frozen random weights (captions such as 'a cat' with 50% dropout to the "
        "empty prompt). The demo's astronaut photo was not among its training photos.")
    manifest = {
        "format": "easyinv-bundle/1", "family": "sd1", "name": "easyinv/tiny-sd1-256", "description": description,
        "device": "cpu", "dtype": "float32", "dtypes": ["float32", "float16"], "resolution": 256,
        "latent": {"channels": 4, "size": 32, "scaling_factor": round(scale, 6)},
        "cond_shape": [77, CONTEXT], "scheduler": SCHEDULER, "files": files, "mutual_attention_layers": ATTENTION_LAYERS,
        "training": training,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out}: {size / 1e6:.2f} MB, scaling_factor {scale:.6f}")


if __name__ == "__main__":
    main()
