"""Tests of pt2_file.slim_package on a package-shaped zip (no torch needed): python3 -m unittest tools/test_pt2_file.py"""
import os
import shutil
import sys
import tempfile
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pt2_file  # noqa: E402

MODEL = "unet/data/aotinductor/model/"
# A library whose weights are appended after the end of its ELF file, as AOTInductor packs a large model's.
LIBRARY = b"\x7fELF" + bytes(range(256)) * 64 + b"appended weights" * 1024


class SlimPackageTest(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp()
        self.package = os.path.join(self.scratch, "unet.pt2")
        with zipfile.ZipFile(self.package, "w", zipfile.ZIP_STORED) as package:
            package.writestr(MODEL + "model.wrapper.cpp", "// generated from /tmp/torchinductor_user/model.cpp\n")
            package.writestr(MODEL + "model.wrapper.so", LIBRARY)
            package.writestr(MODEL + "model.wrapper_metadata.json", '{"AOTI_DEVICE_KEY": "cpu"}')
            package.writestr("unet/archive_format", "pt2")

    def tearDown(self):
        shutil.rmtree(self.scratch)

    def entries(self):
        with zipfile.ZipFile(self.package) as package:
            return {info.filename: (info.compress_type, package.read(info.filename)) for info in package.infolist()}

    def test_sources_go_small_entries_are_deflated_libraries_stay_byte_for_byte(self):
        pt2_file.slim_package(self.package)
        self.assertEqual(os.listdir(self.scratch), ["unet.pt2"])
        self.assertEqual(self.entries(), {
            MODEL + "model.wrapper.so": (zipfile.ZIP_DEFLATED, LIBRARY),
            MODEL + "model.wrapper_metadata.json": (zipfile.ZIP_DEFLATED, b'{"AOTI_DEVICE_KEY": "cpu"}'),
            "unet/archive_format": (zipfile.ZIP_DEFLATED, b"pt2"),
        })

    def test_entries_of_a_real_model_size_stay_stored(self):
        original = pt2_file.DEFLATE_BELOW
        pt2_file.DEFLATE_BELOW = len(LIBRARY)  # the library counts as large
        try:
            pt2_file.slim_package(self.package)
        finally:
            pt2_file.DEFLATE_BELOW = original
        kinds = {name: kind for name, (kind, _) in self.entries().items()}
        self.assertEqual(kinds[MODEL + "model.wrapper.so"], zipfile.ZIP_STORED)
        self.assertEqual(kinds["unet/archive_format"], zipfile.ZIP_DEFLATED)


if __name__ == "__main__":
    unittest.main()
