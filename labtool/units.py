"""Sizes as Docker counts and prints them (printing: its github.com/docker/go-units
package): decimal units for disks, images and networks (``HumanSize``: 1.24MB, 2.048kB,
0B), binary ones for memory (``BytesSize``: 1.5MiB)."""

import os


def tree_size(top):
    """The bytes of the files under ``top`` (regular files and symbolic links), as Docker
    counts an image's SIZE (its layers unpacked, not their compressed blobs) and a volume's
    in ``volume prune``. A file that goes away meanwhile counts nothing."""
    total = 0
    for dirpath, dirs, files in os.walk(top):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def human_size(n, digits=3):
    """Decimal units, ``digits`` significant digits (``HumanSizeWithPrecision``): images,
    volumes, the build context, downloads, network and block I/O."""
    return _size(n, 1000.0, ("B", "kB", "MB", "GB", "TB"), digits)


def bytes_size(n):
    """Binary units, four significant digits: memory in ``labtool stats``."""
    return _size(n, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB"), 4)


def _size(n, base, units, digits):
    n = float(n)
    i = 0
    while n >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.{digits}g}{units[i]}"
