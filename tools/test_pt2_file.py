"""Tests of pt2_file.slim_package on a package-shaped zip around a real shared library built with debug information
(needs g++ and binutils, not torch): python3 -m unittest tools/test_pt2_file.py"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pt2_file  # noqa: E402

SOURCE = 'extern "C" int answer() { return 42; }\n'


def sections(path):
    return subprocess.run(["readelf", "-S", "-W", path], check=True, capture_output=True, text=True).stdout


@unittest.skipUnless(shutil.which("g++") and shutil.which("readelf"), "needs g++ and binutils")
class SlimPackageTest(unittest.TestCase):
    def setUp(self):
        self.scratch = tempfile.mkdtemp()
        source = os.path.join(self.scratch, "model.cpp")
        with open(source, "w") as file:
            file.write(SOURCE)
        self.library = os.path.join(self.scratch, "model.so")
        subprocess.run(["g++", "-g", "-shared", "-fPIC", source, "-o", self.library], check=True)
        self.package = os.path.join(self.scratch, "unet.pt2")
        with zipfile.ZipFile(self.package, "w", zipfile.ZIP_STORED) as package:
            package.write(source, "unet/data/aotinductor/model/model.wrapper.cpp")
            package.write(self.library, "unet/data/aotinductor/model/model.wrapper.so")
            package.writestr("unet/data/aotinductor/model/model.wrapper_metadata.json", '{"AOTI_DEVICE_KEY": "cpu"}')
            package.writestr("unet/archive_format", "pt2")

    def tearDown(self):
        shutil.rmtree(self.scratch)

    def test_sources_and_debug_sections_go_small_entries_are_deflated_the_rest_is_kept(self):
        self.assertIn(".debug_info", sections(self.library))
        pt2_file.slim_package(self.package)
        self.assertEqual(os.listdir(self.scratch).count("unet.pt2.tmp"), 0)
        with zipfile.ZipFile(self.package) as package:
            names = package.namelist()
            self.assertEqual(names, ["unet/data/aotinductor/model/model.wrapper.so",
                                     "unet/data/aotinductor/model/model.wrapper_metadata.json", "unet/archive_format"])
            self.assertTrue(all(info.compress_type == zipfile.ZIP_DEFLATED for info in package.infolist()))
            self.assertEqual(package.read("unet/archive_format"), b"pt2")
            stripped = os.path.join(self.scratch, "stripped.so")
            with open(stripped, "wb") as file:
                file.write(package.read(names[0]))
        self.assertNotIn(".debug_info", sections(stripped))
        symbols = subprocess.run(["nm", "-D", stripped], check=True, capture_output=True, text=True).stdout
        self.assertIn(" T answer", symbols)  # what the loader looks up stays

    def test_entries_of_a_real_model_size_stay_stored(self):
        original = pt2_file.DEFLATE_BELOW
        pt2_file.DEFLATE_BELOW = 16  # every entry but the tiny ones counts as large
        try:
            pt2_file.slim_package(self.package)
        finally:
            pt2_file.DEFLATE_BELOW = original
        with zipfile.ZipFile(self.package) as package:
            kinds = {info.filename.rsplit("/", 1)[-1]: info.compress_type for info in package.infolist()}
        self.assertEqual(kinds, {"model.wrapper.so": zipfile.ZIP_STORED, "model.wrapper_metadata.json": zipfile.ZIP_STORED,
                                 "archive_format": zipfile.ZIP_DEFLATED})


if __name__ == "__main__":
    unittest.main()
