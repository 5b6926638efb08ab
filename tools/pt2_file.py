"""AOTInductor packages fit to ship: without the generated C++ sources, which hold the absolute paths of the machine
that compiled them (its compiler cache, its PyTorch headers) and which loading does not need (export_sd.py also
compiles without debug line tables, which held the same paths). Small entries are deflated (LibTorch's package
loader inflates them); large ones, the weights of a real model, stay stored: floats hardly compress and every load
would pay for inflating them. The libraries are copied byte for byte: a large model's weights are appended after
the end of its ELF file, where a tool such as strip would drop them."""
import os
import zipfile

DEFLATE_BELOW = 64 << 20  # bytes


def slim_package(path: str) -> None:
    """Rewrites the .pt2 package `path` (temporary file, fsync, rename)."""
    temporary = path + ".tmp"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(temporary, "w") as target:
        for info in source.infolist():
            if info.filename.endswith(".cpp"):
                continue
            data = source.read(info.filename)
            info.compress_type = zipfile.ZIP_DEFLATED if len(data) < DEFLATE_BELOW else zipfile.ZIP_STORED
            target.writestr(info, data)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)
