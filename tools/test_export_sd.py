#!/usr/bin/env python3
"""Tests of tools/export_sd.py that run without diffusers or transformers: argument parsing, the manifest, the
wrappers traced around small stand-ins that follow the diffusers / transformers call conventions, the trace check,
and the whole export loop over a stand-in checkpoint.

    /usr/bin/python3 -m unittest tools/test_export_sd.py -v      (from the repository root)
"""
import contextlib
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import unittest
from types import SimpleNamespace

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_sd as ex  # noqa: E402
import argparse_testing  # noqa: E402

SD14_SCHEDULER = {  # CompVis/stable-diffusion-v1-4 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
SD1_SUBSET = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "steps_offset": 1, "set_alpha_to_one": False, "timestep_spacing": "leading"}
SD1_UNET = {"sample_size": 64, "cross_attention_dim": 768, "block_out_channels": [320, 640, 1280, 1280],
            "addition_embed_type": None}
SDXL_UNET = {"sample_size": 128, "cross_attention_dim": 2048, "block_out_channels": [320, 640, 1280],
             "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
             "projection_class_embeddings_input_dim": 2816}
SD1_VAE = {"block_out_channels": [128, 256, 512, 512], "latent_channels": 4, "scaling_factor": 0.18215}
SDXL_VAE = {"block_out_channels": [128, 256, 512, 512], "latent_channels": 4, "scaling_factor": 0.13025,
            "force_upcast": True}


def parse_error(argv) -> str:
    return argparse_testing.parse_error(ex.parse_args, argv)


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins with the diffusers / transformers call conventions. Their shapes come from the inputs the way diffusers
# reads them (x.shape, expand to the batch), so a trace that baked in batch 1 would show.


def sinusoid(values: torch.Tensor, width: int) -> torch.Tensor:
    half = width // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    angles = values.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FakeAttnProcessor:
    """diffusers' processor convention: keys and values from encoder_hidden_states when given."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        return torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v


class FakeAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.processor = FakeAttnProcessor()

    def forward(self, hidden_states, encoder_hidden_states=None):
        return self.processor(self, hidden_states, encoder_hidden_states=encoder_hidden_states)


class FakeBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.attn1 = FakeAttention(channels)


class FakeUNet(nn.Module):
    """Three self-attention layers, registered (down, up, mid) in another order than they run (down, mid, up), as in
    diffusers' UNet2DConditionModel; attn_processors and set_attn_processor as diffusers has them."""

    def __init__(self, cond_dim=12, channels=8, text_dim=0, time_ids_width=4):
        super().__init__()
        self.text_dim, self.time_ids_width, self.channels = text_dim, time_ids_width, channels
        self.down, self.up, self.mid = (FakeBlock(channels) for _ in range(3))
        self.conv_in = nn.Conv2d(4, channels, 3, padding=1)
        self.time = nn.Linear(channels, channels)
        self.key, self.value = nn.Linear(cond_dim, channels), nn.Linear(cond_dim, channels)
        self.add = nn.Linear(text_dim + 6 * time_ids_width, channels) if text_dim else None
        self.conv_out = nn.Conv2d(channels, 4, 3, padding=1)

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, return_dict=True):
        timesteps = timestep.expand(sample.shape[0])
        emb = self.time(sinusoid(timesteps, self.channels).to(sample.dtype))
        if self.add is not None:
            if added_cond_kwargs is None or "text_embeds" not in added_cond_kwargs:
                raise ValueError("this UNet needs added_cond_kwargs text_embeds and time_ids")
            text_embeds, time_ids = added_cond_kwargs["text_embeds"], added_cond_kwargs["time_ids"]
            time_embeds = sinusoid(time_ids.flatten(), self.time_ids_width).reshape((text_embeds.shape[0], -1))
            emb = emb + self.add(torch.cat([text_embeds, time_embeds.to(text_embeds.dtype)], dim=-1))
        hidden = self.conv_in(sample) + emb[:, :, None, None]
        batch, channels, height, width = hidden.shape
        tokens = hidden.reshape(batch, channels, height * width).transpose(1, 2)
        key, value = self.key(encoder_hidden_states), self.value(encoder_hidden_states)
        weights = torch.softmax(tokens @ key.transpose(1, 2) / math.sqrt(channels), dim=-1)
        tokens = tokens + weights @ value
        for block in (self.down, self.mid, self.up):
            tokens = tokens + block.attn1(tokens)
        out = self.conv_out(tokens.transpose(1, 2).reshape(batch, channels, height, width))
        return SimpleNamespace(sample=out) if return_dict else (out,)


    @property
    def attn_processors(self):
        return {f"{name}.processor": module.processor for name, module in self.named_modules()
                if isinstance(module, FakeAttention)}

    def set_attn_processor(self, processors):
        for name, module in self.named_modules():
            if isinstance(module, FakeAttention):
                module.processor = processors.pop(f"{name}.processor")


class FakeDistribution:
    def __init__(self, parameters):
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.std = torch.exp(0.5 * self.logvar.clamp(-30.0, 20.0))


class FakeVAE(nn.Module):
    """encode(x).latent_dist.mean and decode(z).sample, with a scale factor of 8 like AutoencoderKL's."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 8, 8, stride=8)
        self.quant_conv = nn.Conv2d(8, 8, 1)
        self.post_quant_conv = nn.Conv2d(4, 4, 1)
        self.decoder = nn.Conv2d(4, 3, 3, padding=1)

    def encode(self, x, return_dict=True):
        posterior = FakeDistribution(self.quant_conv(self.encoder(x)))
        return SimpleNamespace(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z, return_dict=True):
        hidden = nn.functional.interpolate(self.post_quant_conv(z), scale_factor=8.0, mode="nearest")
        image = torch.tanh(self.decoder(hidden))
        return SimpleNamespace(sample=image) if return_dict else (image,)

    def forward(self, x):
        return self.decode(self.encode(x).latent_dist.mean).sample


class FakeCLIP(nn.Module):
    """CLIPTextModel (projection_dim None) or CLIPTextModelWithProjection: returns last_hidden_state, hidden_states
    (embeddings, then every layer), pooler_output (at the largest id, the end token in CLIP) and text_embeds."""

    def __init__(self, vocab_size=100, width=12, layers=3, projection_dim=None):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(ex.TOKENS, width) * 0.1)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.final_layer_norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, projection_dim, bias=False) if projection_dim else None

    def forward(self, input_ids, attention_mask=None, output_hidden_states=None, return_dict=None):
        batch, length = input_ids.shape
        hidden = self.token_embedding(input_ids) + self.position_embedding[:length]
        causal = torch.full((length, length), float("-inf"), device=hidden.device).triu(1)
        causal = causal[None].expand(batch, length, length).to(hidden.dtype)
        states = (hidden,)
        for layer in self.layers:
            weights = torch.softmax(hidden @ hidden.transpose(1, 2) / 10.0 + causal, dim=-1)
            hidden = hidden + torch.tanh(layer(weights @ hidden))
            states += (hidden,)
        last = self.final_layer_norm(hidden)
        pooled = last[torch.arange(last.shape[0], device=last.device), input_ids.argmax(dim=-1)]
        output = SimpleNamespace(last_hidden_state=last, pooler_output=pooled,
                                 hidden_states=states if output_hidden_states else None)
        if self.projection is not None:
            output = SimpleNamespace(text_embeds=self.projection(pooled), last_hidden_state=last,
                                     hidden_states=output.hidden_states)
        if return_dict is False:
            return tuple(value for value in vars(output).values() if value is not None)
        return output


SMALL_SPEC = {"resolution": 32, "channels": 4, "latent_size": 4, "scaling_factor": 0.18215, "cond_shape": [77, 12],
              "vocab_size": 100, "num_train_timesteps": 1000}
SMALL_SDXL_SPEC = dict(SMALL_SPEC, text_embeds_dim=10, time_ids=6)


def stand_in(name: str, family: str):
    if name == "unet":
        return FakeUNet(text_dim=10) if family == "sdxl" else FakeUNet()
    if name in ("vae_encoder", "vae_decoder"):
        return FakeVAE()
    return FakeCLIP(projection_dim=10 if name == "text_encoder_2" else None)


def inputs(name, spec, batch, seed=0):
    return ex.example_inputs(name, spec, batch, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(seed))


class ParseArgsTest(unittest.TestCase):
    def test_the_documented_command_line(self):
        args = ex.parse_args(["--model", "CompVis/stable-diffusion-v1-4", "--out", "bundles/sd14-cuda-fp16",
                              "--device", "cuda", "--dtype", "float16"])
        self.assertEqual((args.model, args.out, args.device, args.dtype), (
            "CompVis/stable-diffusion-v1-4", "bundles/sd14-cuda-fp16", "cuda", "float16"))
        self.assertIsNone(args.family)
        self.assertIsNone(args.resolution)
        self.assertIsNone(args.modules)
        self.assertFalse(args.random_weights)
        self.assertEqual(args.check_batch, 2)
        self.assertIsNone(args.name)

    def test_dtype_defaults_to_the_device(self):
        self.assertEqual(ex.parse_args(["--model", "m", "--out", "o"]).dtype, "float16")
        self.assertEqual(ex.parse_args(["--model", "m", "--out", "o", "--device", "cpu"]).dtype, "float32")

    def test_float16_on_cpu_is_refused(self):
        message = parse_error(["--model", "m", "--out", "o", "--device", "cpu", "--dtype", "float16"])
        self.assertIn("float16 needs --device cuda", message)

    def test_unknown_family_is_refused(self):
        self.assertIn("unknown --family 'sd3'", parse_error(["--model", "m", "--out", "o", "--family", "sd3"]))
        self.assertEqual(ex.parse_args(["--model", "m", "--out", "o", "--family", "sdxl"]).family, "sdxl")

    def test_modules(self):
        args = ex.parse_args(["--model", "m", "--out", "o", "--modules", "unet, vae_decoder,unet", "--random-weights"])
        self.assertEqual(args.modules, ("unet", "vae_decoder"))
        self.assertTrue(args.random_weights)
        self.assertIn("unknown --modules safety_checker", parse_error(["--model", "m", "--out", "o", "--modules",
                                                                       "unet,safety_checker"]))

    def test_other_errors(self):
        self.assertIn("multiple of 8", parse_error(["--model", "m", "--out", "o", "--resolution", "500"]))
        self.assertIn("--check-batch", parse_error(["--model", "m", "--out", "o", "--check-batch", "0"]))
        self.assertIn("--model", parse_error(["--out", "o"]))
        self.assertIn("invalid choice", parse_error(["--model", "m", "--out", "o", "--device", "mps"]))

    def test_cpu_isa(self):
        self.assertEqual(ex.parse_args(["--model", "m", "--out", "o"]).cpu_isa, "native")
        self.assertEqual(ex.parse_args(["--model", "m", "--out", "o", "--cpu-isa", "avx2"]).cpu_isa, "avx2")
        self.assertIn("invalid choice", parse_error(["--model", "m", "--out", "o", "--cpu-isa", "sse4"]))


class ConfigTest(unittest.TestCase):
    def test_family_from_model_index(self):
        sdxl = {"_class_name": "StableDiffusionXLPipeline", "text_encoder": ["transformers", "CLIPTextModel"],
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}
        self.assertEqual(ex.detect_family(sdxl), "sdxl")
        self.assertEqual(ex.detect_family({"text_encoder": ["transformers", "CLIPTextModel"]}), "sd1")
        self.assertEqual(ex.detect_family({"text_encoder_2": [None, None]}), "sd1")

    def test_family_must_fit_the_unet(self):
        ex.check_family("sd1", SD1_UNET)
        ex.check_family("sdxl", SDXL_UNET)
        with self.assertRaisesRegex(ex.ExportError, "--family sdxl"):
            ex.check_family("sd1", SDXL_UNET)
        with self.assertRaisesRegex(ex.ExportError, "--family sd1"):
            ex.check_family("sdxl", SD1_UNET)

    def test_modules_for(self):
        self.assertEqual(ex.modules_for("sd1"), ("unet", "vae_encoder", "vae_decoder", "text_encoder"))
        self.assertEqual(ex.modules_for("sdxl")[-1], "text_encoder_2")
        with self.assertRaisesRegex(ex.ExportError, "sd1 has no text_encoder_2"):
            ex.modules_for("sd1", ("unet", "text_encoder_2"))

    def test_resolution(self):
        self.assertEqual(ex.vae_scale_factor(SD1_VAE), 8)
        self.assertEqual(ex.default_resolution(SD1_UNET, SD1_VAE), 512)
        self.assertEqual(ex.default_resolution(SDXL_UNET, SDXL_VAE), 1024)
        ex.check_resolution(768, SD1_UNET, SD1_VAE)
        with self.assertRaisesRegex(ex.ExportError, "multiple of 64"):
            ex.check_resolution(520, SD1_UNET, SD1_VAE)
        with self.assertRaisesRegex(ex.ExportError, "--resolution"):
            ex.default_resolution({}, SD1_VAE)

    def test_sdxl_added_dims(self):
        self.assertEqual(ex.sdxl_added_dims(SDXL_UNET), (1280, 6))

    def test_scheduler_subset(self):
        self.assertEqual(ex.scheduler_subset(SD14_SCHEDULER), SD1_SUBSET)
        self.assertEqual(list(ex.scheduler_subset(SD14_SCHEDULER)), list(ex.SCHEDULER_KEYS))
        self.assertEqual(ex.scheduler_subset({}), ex.DDIM_DEFAULTS)
        self.assertEqual(ex.scheduler_subset(dict(SD14_SCHEDULER, timestep_spacing="trailing"))["timestep_spacing"],
                         "trailing")
        for bad, message in [({"prediction_type": "v_prediction"}, "epsilon only"),
                             ({"beta_schedule": "squaredcos_cap_v2"}, "not supported"),
                             ({"trained_betas": [0.1]}, "trained_betas"),
                             ({"rescale_betas_zero_snr": True}, "zero SNR"),
                             ({"timestep_spacing": "karras"}, "not supported")]:
            with self.assertRaisesRegex(ex.ExportError, message):
                ex.scheduler_subset(dict(SD14_SCHEDULER, **bad))


class ManifestTest(unittest.TestCase):
    versions = {"torch": "2.3.0", "diffusers": "0.29.0", "transformers": "4.41.0"}

    def sd1(self, **overrides):
        arguments = dict(family="sd1", name="CompVis/stable-diffusion-v1-4", device="cuda", dtype="float16",
                         resolution=512, unet_config=SD1_UNET, vae_config=SD1_VAE, scheduler_config=SD14_SCHEDULER,
                         files={"unet": "unet.pt", "text_encoder": "text_encoder.pt", "tokenizer": "tokenizer.json"},
                         check={"unet": 0.0012, "text_encoder": 0.0}, versions=self.versions, random_weights=False,
                         date="2025-01-02T03:04:05+00:00")
        return ex.build_manifest(**dict(arguments, **overrides))

    def test_sd1_manifest(self):
        self.assertEqual(self.sd1(), {
            "format": "easyinv-bundle/1", "family": "sd1", "name": "CompVis/stable-diffusion-v1-4",
            "device": "cuda", "dtype": "float16", "resolution": 512,
            "latent": {"channels": 4, "size": 64, "scaling_factor": 0.18215},
            "cond_shape": [77, 768], "scheduler": SD1_SUBSET,
            "files": {"unet": "unet.pt", "text_encoder": "text_encoder.pt", "tokenizer": "tokenizer.json"},
            "check": {"unet": 0.0012, "text_encoder": 0.0},
            "export": {"torch": "2.3.0", "diffusers": "0.29.0", "transformers": "4.41.0", "random_weights": False,
                       "date": "2025-01-02T03:04:05+00:00"},
        })

    def test_sdxl_manifest(self):
        manifest = self.sd1(family="sdxl", name="stabilityai/stable-diffusion-xl-base-1.0", resolution=1024,
                            unet_config=SDXL_UNET, vae_config=SDXL_VAE, random_weights=True, date=None,
                            scheduler_config=dict(SD14_SCHEDULER, _class_name="EulerDiscreteScheduler",
                                                  timestep_spacing="leading", prediction_type="epsilon"))
        self.assertEqual(manifest["latent"], {"channels": 4, "size": 128, "scaling_factor": 0.13025})
        self.assertEqual(manifest["cond_shape"], [77, 2048])
        self.assertEqual(manifest["scheduler"], SD1_SUBSET)
        self.assertTrue(manifest["export"]["random_weights"])
        self.assertRegex(manifest["export"]["date"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")

    def test_check_values_are_json_numbers(self):
        manifest = self.sd1(check={"unet": float("nan"), "vae_decoder": None, "text_encoder": 3e-4})
        self.assertEqual(manifest["check"], {"unet": None, "vae_decoder": None, "text_encoder": 3e-4})
        with tempfile.TemporaryDirectory() as out:
            with open(ex.write_manifest(out, manifest)) as file:
                self.assertEqual(json.load(file), manifest)

    def test_merge_keeps_earlier_modules_of_the_same_bundle(self):
        with tempfile.TemporaryDirectory() as out:
            for name in ("unet.pt", "vae_decoder.pt"):
                open(os.path.join(out, name), "w").close()
            earlier = self.sd1(files={"unet": "unet.pt", "vae_decoder": "vae_decoder.pt", "gone": "gone.pt"},
                               check={"unet": 1e-3, "vae_decoder": 2e-3})
            now = self.sd1(files={"unet": "unet.pt", "text_encoder": "text_encoder.pt"}, check={"unet": 5e-4})
            merged = ex.merge_manifest(earlier, now, out)
            self.assertEqual(merged["files"], {"unet": "unet.pt", "text_encoder": "text_encoder.pt",
                                               "vae_decoder": "vae_decoder.pt"})
            self.assertEqual(merged["check"], {"unet": 5e-4, "vae_decoder": 2e-3})
            self.assertEqual(ex.merge_manifest(dict(earlier, dtype="float32"), now, out), now)
            self.assertEqual(ex.merge_manifest(None, now, out), now)
            random = self.sd1(random_weights=True, files={"vae_decoder": "vae_decoder.pt"})
            self.assertEqual(ex.merge_manifest(random, now, out), now)


class WrapperTest(unittest.TestCase):
    """Each wrapper traced at batch 1 around a stand-in: equal to eager, and still right at batch 2 and 3."""

    def check_wrapper(self, name, family, spec):
        torch.manual_seed(0)
        wrapper = ex.wrap(name, family, stand_in(name, family).eval())
        traced = ex.trace(wrapper, inputs(name, spec, 1))
        with tempfile.TemporaryDirectory() as out:  # the file the library loads
            path = os.path.join(out, f"{name}.pt")
            traced.save(path)
            loaded = torch.jit.load(path)
        for batch in (1, 2, 3):
            example = inputs(name, spec, batch, seed=batch)
            with torch.no_grad():
                expected, got, got_loaded = wrapper(*example), traced(*example), loaded(*example)
            for output in (got, got_loaded):
                self.assertEqual(ex.max_difference(output, expected), 0.0, f"{name} at batch {batch}")
            self.assertEqual(ex._tensors(expected)[0].shape[0], batch)
        return expected

    def test_unet(self):
        eps = self.check_wrapper("unet", "sd1", SMALL_SPEC)
        self.assertEqual(tuple(eps.shape), (3, 4, 4, 4))

    def test_sdxl_unet(self):
        eps = self.check_wrapper("unet", "sdxl", SMALL_SDXL_SPEC)
        self.assertEqual(tuple(eps.shape), (3, 4, 4, 4))
        unet = FakeUNet(text_dim=10)
        sample, timestep, cond, text_embeds, time_ids = inputs("unet", SMALL_SDXL_SPEC, 2)
        direct = unet(sample, timestep, cond, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids})
        self.assertTrue(torch.equal(ex.SDXLUNetWrapper(unet)(sample, timestep, cond, text_embeds, time_ids),
                                    direct.sample))

    def test_vae(self):
        latent = self.check_wrapper("vae_encoder", "sd1", SMALL_SPEC)
        self.assertEqual(tuple(latent.shape), (3, 4, 4, 4))
        image = self.check_wrapper("vae_decoder", "sd1", SMALL_SPEC)
        self.assertEqual(tuple(image.shape), (3, 3, 32, 32))
        vae = FakeVAE()
        x = inputs("vae_encoder", SMALL_SPEC, 2)[0]
        self.assertTrue(torch.equal(ex.VaeEncoderWrapper(vae)(x), vae.encode(x).latent_dist.mean))

    def test_sd1_text_encoder(self):
        states = self.check_wrapper("text_encoder", "sd1", SMALL_SPEC)
        self.assertEqual(tuple(states.shape), (3, 77, 12))
        clip = FakeCLIP()
        ids = inputs("text_encoder", SMALL_SPEC, 2)[0]
        self.assertTrue(torch.equal(ex.TextEncoderWrapper(clip)(ids), clip(ids).last_hidden_state))

    def test_sdxl_text_encoders(self):
        clip = FakeCLIP()
        ids = inputs("text_encoder", SMALL_SPEC, 2)[0]
        penultimate = clip(ids, output_hidden_states=True).hidden_states[-2]
        self.assertTrue(torch.equal(ex.PenultimateTextEncoderWrapper(clip)(ids), penultimate))
        self.assertFalse(torch.equal(penultimate, clip(ids).last_hidden_state))
        self.check_wrapper("text_encoder", "sdxl", SMALL_SPEC)
        states, text_embeds = self.check_wrapper("text_encoder_2", "sdxl", SMALL_SPEC)
        self.assertEqual((tuple(states.shape), tuple(text_embeds.shape)), ((3, 77, 12), (3, 10)))


class TakeKeysFrom(FakeAttnProcessor):
    """Written apart from export_sd's processor: every row's keys and values from one row."""

    def __init__(self, row):
        self.row = row

    def __call__(self, attn, hidden_states, encoder_hidden_states=None):
        source = hidden_states[self.row:self.row + 1].expand_as(hidden_states)
        return super().__call__(attn, hidden_states, encoder_hidden_states=source)


class MutualAttentionTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.plain = FakeUNet().eval()
        self.controlled = FakeUNet().eval()
        self.controlled.load_state_dict(self.plain.state_dict())
        self.wrapper = ex.wrap("unet", "sd1", self.controlled, mutual_attention=True)
        self.sample, self.timestep, self.cond = inputs("unet", SMALL_SPEC, 2)

    def test_layers_and_the_identity_is_the_plain_unet_bit_for_bit(self):
        self.assertEqual(self.wrapper.mutual.layers, 3)
        identity = torch.tensor([[0, 0, 0], [1, 1, 1]])
        with torch.no_grad():
            got = self.wrapper(self.sample, self.timestep, self.cond, identity)
            expected = ex.UNetWrapper(self.plain)(self.sample, self.timestep, self.cond)
        self.assertTrue(torch.equal(got, expected))
        spec = dict(SMALL_SPEC, mutual_attention_layers=3)
        ex.check_identity_is_plain(self.controlled, self.wrapper, inputs("unet", spec, 2))  # raises when not

    def test_layers_are_numbered_in_call_order(self):
        # layer 1 is the second to run: the mid block, registered last
        sources = torch.tensor([[0, 1, 0], [1, 1, 1]])
        self.plain.mid.attn1.processor = TakeKeysFrom(1)
        traced = ex.trace(self.wrapper, (self.sample, self.timestep, self.cond, sources))
        with torch.no_grad():
            expected = ex.UNetWrapper(self.plain)(self.sample, self.timestep, self.cond)
            self.assertLess(ex.max_difference(traced(self.sample, self.timestep, self.cond, sources), expected), 1e-6)
            identity = traced(self.sample, self.timestep, self.cond, torch.tensor([[0, 0, 0], [1, 1, 1]]))
        self.assertGreater(ex.max_difference(identity, expected), 1e-3)

    def test_a_unet_without_attention_processors_names_the_flag(self):
        with self.assertRaisesRegex(ex.ExportError, "--no-mutual-attention"):
            ex.wrap("unet", "sd1", FakeVAE(), mutual_attention=True)


class ExampleInputsTest(unittest.TestCase):
    def test_shapes_and_dtypes(self):
        spec = dict(SMALL_SDXL_SPEC, vocab_size=49408)
        sample, timestep, cond, text_embeds, time_ids = inputs("unet", spec, 2)
        self.assertEqual([tuple(t.shape) for t in (sample, timestep, cond, text_embeds, time_ids)],
                         [(2, 4, 4, 4), (2,), (2, 77, 12), (2, 10), (2, 6)])
        self.assertEqual((timestep.dtype, time_ids.dtype), (torch.int64, torch.float32))
        self.assertEqual(time_ids[0].tolist(), [32.0, 32.0, 0.0, 0.0, 32.0, 32.0])
        self.assertEqual(len(inputs("unet", SMALL_SPEC, 1)), 3)
        (image,) = inputs("vae_encoder", spec, 1)
        self.assertEqual(tuple(image.shape), (1, 3, 32, 32))
        self.assertTrue(-1 <= float(image.min()) and float(image.max()) <= 1)
        (ids,) = inputs("text_encoder_2", spec, 3)
        self.assertEqual((tuple(ids.shape), ids.dtype), ((3, 77), torch.int64))
        self.assertTrue(0 <= int(ids.min()) and int(ids.max()) < 49408)
        half = ex.example_inputs("vae_decoder", spec, 1, torch.device("cpu"), torch.float16, torch.Generator())
        self.assertEqual(half[0].dtype, torch.float16)


class Branchy(nn.Module):
    """Follows a Python branch on the data: a trace keeps only the branch its example took."""

    def forward(self, x):
        return x * 2 if float(x.mean()) > 0 else -x


class BatchBaked(nn.Module):
    """Reads the batch as a Python int: a trace at batch 1 keeps 1."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1).sum(dim=1)


class CheckTest(unittest.TestCase):
    def test_a_right_trace_passes_with_its_difference(self):
        wrapper = ex.wrap("unet", "sd1", FakeUNet().eval())
        traced = ex.trace(wrapper, inputs("unet", SMALL_SPEC, 1))
        self.assertEqual(ex.check_trace("unet", traced, wrapper, inputs("unet", SMALL_SPEC, 2), "float32"), 0.0)

    def test_a_wrong_trace_is_flagged(self):
        module = Branchy()
        traced = ex.trace(module, (torch.ones(1, 4),))
        self.assertEqual(ex.check_trace("branchy", traced, module, (torch.ones(2, 4),), "float32"), 0.0)
        with self.assertRaisesRegex(ex.ExportError, "differs from the eager module by 3 on a batch of 2"):
            ex.check_trace("branchy", traced, module, (-torch.ones(2, 4),), "float32")

    def test_a_trace_that_baked_the_batch_is_flagged(self):
        module = BatchBaked()
        traced = ex.trace(module, (torch.ones(1, 3),))
        with self.assertRaisesRegex(ex.ExportError, "traced baked (differs|fails)"):
            ex.check_trace("baked", traced, module, (torch.ones(2, 3),), "float32")

    def test_tolerance_is_relative_to_the_output_scale(self):
        self.assertEqual(ex.tolerance("float32", 0.5), 1e-3)
        self.assertEqual(ex.tolerance("float16", 10.0), 0.5)
        module = nn.Identity()
        x = torch.full((2, 3), 100.0)
        slightly_off = torch.jit.trace(lambda t: t + 0.09, (x,))
        self.assertAlmostEqual(ex.check_trace("id", slightly_off, module, (x,), "float32"), 0.09, places=5)
        with self.assertRaises(ex.ExportError):
            ex.check_trace("id", slightly_off, module, (x / 100,), "float32")

    def test_max_difference(self):
        a = torch.zeros(2, 3)
        self.assertEqual(ex.max_difference((a, a + 1), (a, a + 1.5)), 0.5)
        self.assertEqual(ex.max_difference(a, torch.zeros(1, 3)), math.inf)
        self.assertEqual(ex.max_difference((a,), (a, a)), math.inf)
        self.assertTrue(math.isnan(ex.max_difference(a * float("nan"), a)))

    def test_non_finite_outputs(self):
        module = nn.Identity()
        x = torch.tensor([[1.0, float("inf")]])
        traced = torch.jit.trace(module, (x,))
        with self.assertRaisesRegex(ex.ExportError, "non-finite"):
            ex.check_trace("id", traced, module, (x,), "float16")
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertIsNone(ex.check_trace("id", traced, module, (x,), "float16", allow_nonfinite=True))


# ---------------------------------------------------------------------------------------------------------------
# The whole export over a stand-in checkpoint


class FakeBackend:
    def __init__(self, calls):
        self.calls = calls

    def enable_truncation(self, max_length):
        self.calls.append(("truncation", max_length))

    def enable_padding(self, length, pad_id, pad_token):
        self.calls.append(("padding", length, pad_id, pad_token))

    def save(self, path):
        with open(path, "w") as file:
            json.dump({"calls": self.calls}, file)


class FakeTokenizer:
    def __init__(self, pad_token, pad_token_id):
        self.model_max_length, self.pad_token, self.pad_token_id = 77, pad_token, pad_token_id
        self.backend_tokenizer = FakeBackend([])


class FakeCheckpoint:
    """Stands in for export_sd.Checkpoint: tiny configs whose modules are the stand-ins above."""

    def __init__(self, family):
        self.family = family
        self.diffusers = SimpleNamespace(__version__="0.0.test")
        self.transformers = SimpleNamespace(__version__="0.0.test")
        self.model_index = {"text_encoder": ["transformers", "CLIPTextModel"]}
        if family == "sdxl":
            self.model_index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
            self.unet_config = {"sample_size": 4, "cross_attention_dim": 12, "block_out_channels": [8, 16],
                                "addition_embed_type": "text_time", "addition_time_embed_dim": 4,
                                "projection_class_embeddings_input_dim": 10 + 6 * 4}
        else:
            self.unet_config = {"sample_size": 4, "cross_attention_dim": 12, "block_out_channels": [8, 16]}
        self.vae_config = dict(SD1_VAE)
        self.scheduler_config = dict(SD14_SCHEDULER)
        self.loaded = []

    def load(self, name, dtype, device):
        self.loaded.append(name)
        torch.manual_seed(len(self.loaded))
        return stand_in(name, self.family).to(device=device, dtype=dtype).eval().requires_grad_(False)

    def tokenizer(self, role):
        return FakeTokenizer("!", 0) if role == "tokenizer_2" else FakeTokenizer("<|endoftext|>", 49407)


class ExportTest(unittest.TestCase):
    def run_export(self, out, family, *extra):
        args = ex.parse_args(["--model", f"fake/{family}", "--out", out, "--device", "cpu", *extra])
        checkpoint = FakeCheckpoint(family)
        with contextlib.redirect_stderr(io.StringIO()):
            manifest = ex.export(args, checkpoint)
        with open(os.path.join(out, "manifest.json")) as file:
            self.assertEqual(json.load(file), manifest)
        return manifest, checkpoint

    def test_sd1_bundle(self):
        with tempfile.TemporaryDirectory() as out:
            manifest, checkpoint = self.run_export(out, "sd1")
            self.assertEqual(checkpoint.loaded, list(ex.MODULES["sd1"]))
            self.assertEqual(manifest["family"], "sd1")
            self.assertEqual(manifest["name"], "fake/sd1")  # --model without --name
            self.assertEqual((manifest["device"], manifest["dtype"], manifest["resolution"]), ("cpu", "float32", 32))
            self.assertEqual(manifest["latent"], {"channels": 4, "size": 4, "scaling_factor": 0.18215})
            self.assertEqual(manifest["cond_shape"], [77, 12])
            self.assertEqual(manifest["scheduler"], SD1_SUBSET)
            self.assertEqual(manifest["files"], {"unet": "unet.pt", "vae_encoder": "vae_encoder.pt",
                                                 "vae_decoder": "vae_decoder.pt", "text_encoder": "text_encoder.pt",
                                                 "tokenizer": "tokenizer.json"})
            self.assertEqual(manifest["check"], {name: 0.0 for name in ex.MODULES["sd1"]})
            self.assertEqual(manifest["export"]["diffusers"], "0.0.test")
            self.assertEqual(manifest["export"]["torch"], torch.__version__)
            self.assertFalse(manifest["export"]["random_weights"])
            for file in manifest["files"].values():
                self.assertTrue(os.path.exists(os.path.join(out, file)), file)
                with open(os.path.join(out, file), "rb") as content:  # hashed independently of sha256_of's blocks
                    self.assertEqual(manifest["sha256"][file], hashlib.sha256(content.read()).hexdigest())
            self.assertEqual(sorted(manifest["sha256"]), sorted(manifest["files"].values()))
            with open(os.path.join(out, "tokenizer.json")) as file:
                calls = json.load(file)["calls"]
            self.assertEqual(calls, [["truncation", 77], ["padding", 77, 49407, "<|endoftext|>"]])
            unet = torch.jit.load(os.path.join(out, "unet.pt"))
            self.assertEqual(manifest["mutual_attention_layers"], 3)
            eps = unet(torch.randn(2, 4, 4, 4), torch.tensor([1, 999]), torch.randn(2, 77, 12),
                       torch.tensor([[0, 0, 0], [0, 1, 1]]))
            self.assertEqual(tuple(eps.shape), (2, 4, 4, 4))

    def test_sdxl_bundle_and_a_later_partial_export(self):
        with tempfile.TemporaryDirectory() as out:
            manifest, _ = self.run_export(out, "sdxl", "--resolution", "64")
            self.assertEqual(manifest["family"], "sdxl")
            self.assertEqual(manifest["latent"]["size"], 8)
            self.assertEqual(sorted(manifest["files"]), sorted(ex.MODULES["sdxl"] + ("tokenizer", "tokenizer_2")))
            with open(os.path.join(out, "tokenizer_2.json")) as file:
                self.assertEqual(json.load(file)["calls"][1], ["padding", 77, 0, "!"])
            unet = torch.jit.load(os.path.join(out, "unet.pt"))
            eps = unet(torch.randn(3, 4, 8, 8), torch.tensor([1, 500, 999]), torch.randn(3, 77, 12),
                       torch.randn(3, 10), torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 3),
                       torch.arange(3)[:, None].expand(3, 3))
            self.assertEqual(tuple(eps.shape), (3, 4, 8, 8))
            states, pooled = torch.jit.load(os.path.join(out, "text_encoder_2.pt"))(torch.randint(0, 100, (2, 77)))
            self.assertEqual((tuple(states.shape), tuple(pooled.shape)), ((2, 77, 12), (2, 10)))

            again, checkpoint = self.run_export(out, "sdxl", "--resolution", "64", "--modules", "unet")
            self.assertEqual(checkpoint.loaded, ["unet"])
            self.assertEqual(again["files"], manifest["files"])
            self.assertEqual(again["check"], manifest["check"])

    def test_name(self):
        with tempfile.TemporaryDirectory() as out:
            manifest, _ = self.run_export(out, "sd1", "--modules", "unet", "--name", "easyinv/diffusers-sd1")
            self.assertEqual(manifest["name"], "easyinv/diffusers-sd1")

    def test_without_mutual_attention(self):
        with tempfile.TemporaryDirectory() as out:
            manifest, _ = self.run_export(out, "sd1", "--modules", "unet", "--no-mutual-attention")
            self.assertNotIn("mutual_attention_layers", manifest)
            eps = torch.jit.load(os.path.join(out, "unet.pt"))(torch.randn(2, 4, 4, 4), torch.tensor([1, 999]),
                                                                torch.randn(2, 77, 12))
            self.assertEqual(tuple(eps.shape), (2, 4, 4, 4))

    def test_family_mismatch_and_refused_modules(self):
        with tempfile.TemporaryDirectory() as out:
            with self.assertRaisesRegex(ex.ExportError, "--family sdxl"):
                self.run_export(out, "sdxl", "--family", "sd1")
            with self.assertRaisesRegex(ex.ExportError, "no text_encoder_2"):
                self.run_export(out, "sd1", "--modules", "text_encoder_2")
            with self.assertRaisesRegex(ex.ExportError, "multiple of 16"):
                self.run_export(out, "sd1", "--resolution", "40")
            self.assertFalse(os.path.exists(os.path.join(out, "manifest.json")))

    @unittest.skipIf(torch.cuda.is_available(), "this machine has CUDA")
    def test_cuda_without_cuda(self):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            self.assertEqual(ex.main(["--model", "m", "--out", "o", "--device", "cuda"]), 1)
        self.assertIn("sees no CUDA device", stderr.getvalue())

    def test_missing_diffusers_says_what_to_install(self):
        try:
            import diffusers  # noqa: F401
            import transformers  # noqa: F401
            self.skipTest("diffusers and transformers are installed")
        except ImportError:
            pass
        stderr = io.StringIO()
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(stderr):
            self.assertEqual(ex.main(["--model", "m", "--out", out, "--device", "cpu"]), 1)
        self.assertIn("is not installed: pip install diffusers transformers", stderr.getvalue())


if __name__ == "__main__":
    unittest.main()
