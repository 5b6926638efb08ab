"""AOTInductor packages fit to ship: without the generated C++ sources and without the shared libraries' debug
sections. Both hold the absolute paths of the machine that compiled them (its compiler cache, its PyTorch headers)
and loading needs neither; together they are over half of a small package. Small entries are deflated (LibTorch's
package loader inflates them); large ones, the weights of a real model, stay stored: floats hardly compress and
every load would pay for inflating them."""
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

DEFLATE_BELOW = 64 << 20  # bytes


def strip_debug(data: bytes) -> bytes:
    strip = shutil.which("strip")
    if strip is None:  # binutils usually come with the compiler AOTInductor needs; a package with them still works
        print("pt2_file: warning: no `strip` (binutils): the package keeps its debug sections", file=sys.stderr)
        return data
    with tempfile.TemporaryDirectory() as scratch:
        library = os.path.join(scratch, "library.so")
        with open(library, "wb") as file:
            file.write(data)
        subprocess.run([strip, "--strip-debug", library], check=True)
        with open(library, "rb") as file:
            return file.read()


def slim_package(path: str) -> None:
    """Rewrites the .pt2 package `path` (temporary file, fsync, rename)."""
    temporary = path + ".tmp"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(temporary, "w") as target:
        for info in source.infolist():
            if info.filename.endswith(".cpp"):
                continue
            data = source.read(info.filename)
            if info.filename.endswith(".so"):
                data = strip_debug(data)
            info.compress_type = zipfile.ZIP_DEFLATED if len(data) < DEFLATE_BELOW else zipfile.ZIP_STORED
            target.writestr(info, data)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)
