#!/usr/bin/env python3
"""Exports a bundle's TorchScript UNet to ONNX for bench/onnxruntime.js, as a Node user moving to onnxruntime-node
would: torch.onnx's TorchScript exporter (the only one that takes a TorchScript file), opset 17, the batch dynamic.
A model over protobuf's 2 GB limit gets its weights in an external data file beside OUT.

    python bench/onnx_export.py UNET.pt OUT.onnx LATENT_SIDE COND_TOKENS COND_DIM
"""
import sys

import torch

unet_path, out, side, tokens, dim = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
module = torch.jit.load(unet_path).eval()
example = (torch.randn(1, 4, side, side), torch.tensor([500]), torch.randn(1, tokens, dim))
names = ["sample", "timestep", "encoder_hidden_states"]
torch.onnx.export(module, example, out, dynamo=False, opset_version=17, input_names=names, output_names=["eps"],
                  dynamic_axes={name: {0: "batch"} for name in names + ["eps"]})
