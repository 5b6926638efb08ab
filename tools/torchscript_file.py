"""TorchScript files fit to commit: saved without their debug records (*.debug_pkl), which hold the source lines and
the absolute paths of the files that made them, paths of the machine that wrote them. Loading does not need them;
only LibTorch's error tracebacks lose the "original code" part."""
import os
import zipfile


def strip_sources(path: str) -> None:
    """Rewrites a TorchScript zip without its *.debug_pkl records."""
    temporary = path + ".tmp"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            if not info.filename.endswith(".debug_pkl"):
                target.writestr(info, source.read(info.filename))
    os.replace(temporary, path)


def save_without_sources(module, path: str) -> None:
    module.save(path)
    strip_sources(path)
