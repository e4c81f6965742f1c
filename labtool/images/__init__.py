"""Images: read-only templates a container's root filesystem is made from.

    store.py      an OCI image layout on disk (oci-layout, index.json, blobs/sha256/...)
    builtin.py    images labtool can make offline, like ``busybox`` from Debian's
                  busybox-static binary (Docker would pull them from a registry)
    hello.py      ``hello-world``: a tiny static program, assembled byte by byte
    reference.py  image names: [HOST[:PORT]/]PATH[:TAG][@DIGEST], the default registry
    registry.py   pull, push, login, logout: the Docker Registry HTTP API v2
    dockerfile.py reading a Dockerfile: instructions, the two forms, words and $VARIABLES
    build.py      ``labtool build``: Docker's classic builder, one image per instruction
    context.py    the build context and ``.dockerignore``; the files COPY reads
    listing.py    ``images``, ``image inspect``, ``history``
    remove.py     ``rmi`` and ``image prune``, with Docker's rules; unused blobs go
    archive.py    ``save`` and ``load``: images in an OCI archive (a tar)

``find_or_make(ref)`` is what ``labtool run`` calls: the image from the store; for a
built-in image that is missing, made on first use; for any other, pulled from its
registry (the one its name starts with, or the default one) the way ``docker run`` pulls.
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
    if name in builtin.MAKERS:
        print(f"Unable to find image '{name}' locally", file=sys.stderr)
        return builtin.MAKERS[name]()
    from labtool.images import reference

    if not (reference.names_registry(ref) or reference.default_registry()):
        raise ImageNotFound(name)
    from labtool.images import registry

    print(f"Unable to find image '{name}' locally", file=sys.stderr)
    return registry.pull(ref, out=sys.stderr)
