"""Images: read-only templates a container's root filesystem is made from.

    store.py     an OCI image layout on disk (oci-layout, index.json, blobs/sha256/...)
    builtin.py   images labtool can make offline, like ``busybox`` from Debian's
                 busybox-static binary (Docker would pull them from a registry)

``find_or_make(ref)`` is what ``labtool run`` calls: the image from the store, or, for a
built-in image that is missing, made on first use, the way ``docker run`` pulls.
"""

import sys

from labtool.errors import ImageNotFound
from labtool.images import store


def find_or_make(ref):
    image = store.find(ref)
    if image is not None:
        return image
    from labtool.images import builtin

    name = store.normalize(ref)
    if name not in builtin.MAKERS:
        raise ImageNotFound(name)
    print(f"Unable to find image '{name}' locally", file=sys.stderr)
    return builtin.MAKERS[name]()
