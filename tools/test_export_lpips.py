#!/usr/bin/env python3
"""Tests of tools/export_lpips.py and test/python/make_test_lpips.py that run without the lpips package: the wrapper
around stand-ins with lpips.LPIPS's call convention, argument parsing, the whole export (trace, check, save) over a
stand-in `lpips` module, and the small test network.

    /usr/bin/python3 -m unittest tools/test_export_lpips.py -v      (from the repository root)
"""
import contextlib
import io
import os
import sys
import tempfile
import unittest
from types import ModuleType
from unittest import mock

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "test", "python"))  # the tiny LPIPS network the tests also use
import export_lpips as ex  # noqa: E402
import argparse_testing  # noqa: E402
import make_test_lpips as tiny  # noqa: E402


def parse_error(argv) -> str:
    return argparse_testing.parse_error(ex.parse_args, argv)


def images(batch, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, size, size, generator=generator) * 2 - 1 for _ in range(2)]


class Recorder(nn.Module):
    """lpips.LPIPS's call convention; records what it was given and returns [B,1,1,1]."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, in0, in1, retPerLayer=False, normalize=False):
        self.calls.append((in0, in1, retPerLayer, normalize))
        return (in0 - in1).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


class Wrapper(unittest.TestCase):
    def test_passes_the_images_unchanged_without_normalize(self):
        recorder = Recorder()
        a, b = images(2)
        out = ex.LpipsWrapper(recorder)(a, b)
        self.assertEqual(len(recorder.calls), 1)
        in0, in1, per_layer, normalize = recorder.calls[0]
        self.assertIs(in0, a)
        self.assertIs(in1, b)
        self.assertFalse(per_layer)
        self.assertIs(normalize, False)
        self.assertGreaterEqual(in0.min().item(), -1)
        self.assertLessEqual(in0.max().item(), 1)
        self.assertLess(in0.min().item(), 0)  # [-1, 1] images, not [0, 1]
        self.assertEqual(tuple(out.shape), (2,))
        torch.testing.assert_close(out, (a - b).abs().mean(dim=(1, 2, 3)))

    def test_traces_and_scripts_to_one_value_per_image(self):
        model = tiny.build()
        a, b = images(1)
        with torch.no_grad():
            traced = torch.jit.trace(model, (a, b), check_trace=False)
        scripted = torch.jit.script(model)
        for batch, size in ((1, 32), (3, 32), (2, 48)):
            a, b = images(batch, size, seed=batch + size)
            with torch.no_grad():
                expected = model(a, b)
                self.assertEqual(tuple(expected.shape), (batch,))
                torch.testing.assert_close(traced(a, b), expected)
                torch.testing.assert_close(scripted(a, b), expected)


class Arguments(unittest.TestCase):
    def test_defaults(self):
        args = ex.parse_args([])
        self.assertEqual((args.out, args.device, args.dtype, args.size), ("lpips_vgg.pt", "cpu", "float32", 256))

    def test_refuses_float16_on_cpu(self):
        self.assertIn("float16 needs --device cuda", parse_error(["--dtype", "float16"]))
        self.assertIn("float16 needs --device cuda", parse_error(["--device", "cpu", "--dtype", "float16"]))
        args = ex.parse_args(["--device", "cuda", "--dtype", "float16", "--size", "128", "--out", "x.pt"])
        self.assertEqual((args.device, args.dtype, args.size, args.out), ("cuda", "float16", 128, "x.pt"))

    def test_refuses_bad_choices(self):
        self.assertIn("invalid choice", parse_error(["--dtype", "bfloat16"]))
        self.assertIn("invalid choice", parse_error(["--device", "mps"]))
        self.assertIn("too small", parse_error(["--size", "8"]))


def fake_lpips(made):
    """A stand-in `lpips` package whose LPIPS(net, version) is the small test network."""
    module = ModuleType("lpips")

    def LPIPS(net="alex", version="0.1", **kwargs):
        made.append((net, version, kwargs))
        return tiny.build().model.train()  # export must put it in eval mode

    module.LPIPS = LPIPS
    return module


class Export(unittest.TestCase):
    def test_missing_lpips_names_pip_install(self):
        with mock.patch.dict(sys.modules, {"lpips": None}), self.assertRaises(SystemExit) as raised:
            ex.build_lpips("cpu", torch.float32)
        self.assertIn("pip install lpips", str(raised.exception))

    def test_builds_vgg_v01_in_eval_without_gradients(self):
        made = []
        with mock.patch.dict(sys.modules, {"lpips": fake_lpips(made)}):
            model = ex.build_lpips("cpu", torch.float32)
        self.assertEqual(made, [("vgg", "0.1", {})])
        self.assertFalse(model.training)
        self.assertFalse(any(parameter.requires_grad for parameter in model.parameters()))

    def test_exports_a_module_that_matches_the_eager_one(self):
        with tempfile.TemporaryDirectory() as folder, mock.patch.dict(sys.modules, {"lpips": fake_lpips([])}):
            out = os.path.join(folder, "lpips.pt")
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                self.assertEqual(ex.main(["--out", out, "--size", "32"]), 0)
            self.assertIn("largest |traced - eager|", stdout.getvalue())
            loaded = torch.jit.load(out)
        eager = tiny.build()
        for batch, size in ((1, 32), (4, 40)):
            a, b = images(batch, size, seed=7)
            with torch.no_grad():
                torch.testing.assert_close(loaded(a, b), eager(a, b))

    def test_check_fails_on_a_wrong_trace(self):
        eager = tiny.build()
        args = ex.parse_args(["--size", "32"])
        wrong = lambda a, b: eager(a, b) + 1e-2  # noqa: E731
        with contextlib.redirect_stdout(io.StringIO()), self.assertRaises(SystemExit) as raised:
            ex.check(wrong, eager, args)
        self.assertIn("does not match", str(raised.exception))


class TinyNetwork(unittest.TestCase):
    def setUp(self):
        self.model = tiny.build()

    def test_zero_for_identical_images_and_symmetric(self):
        a, b = images(3, 40)
        with torch.no_grad():
            self.assertTrue(torch.equal(self.model(a, a), torch.zeros(3)))
            ab, ba = self.model(a, b), self.model(b, a)
        self.assertTrue(torch.equal(ab, ba))
        self.assertTrue(bool((ab > 0).all()))

    def test_has_the_lpips_structure(self):
        model = self.model.model
        torch.testing.assert_close(model.scaling_layer.shift.flatten(), torch.tensor([-0.030, -0.088, -0.188]))
        torch.testing.assert_close(model.scaling_layer.scale.flatten(), torch.tensor([0.458, 0.448, 0.450]))
        self.assertEqual(len(model.lins), 5)
        for lin in model.lins:
            self.assertIsNone(lin.bias)
            self.assertTrue(bool((lin.weight >= 0).all()))

    def test_the_saved_file_is_this_network(self):
        if not os.path.exists(tiny.OUT):
            self.skipTest(f"{tiny.OUT} not written yet (run test/python/make_test_lpips.py)")
        self.assertLess(os.path.getsize(tiny.OUT), 1 << 20)
        loaded = torch.jit.load(tiny.OUT)
        a, b = images(2, 48, seed=3)
        with torch.no_grad():
            torch.testing.assert_close(loaded(a, b), self.model(a, b))


if __name__ == "__main__":
    unittest.main()
