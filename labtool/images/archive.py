"""``labtool save`` and ``labtool load``: images in one tar file, to carry them without a registry.

The file is an "OCI archive": the same image layout as the store (``oci-layout``,
``index.json``, ``blobs/sha256/...``), packed in a tar. ``skopeo`` reads it as
``oci-archive:FILE:TAG``; ``tar tf FILE`` shows what an image is made of. (``docker save``
writes Docker's own older archive format, with a ``manifest.json``; Docker 25 and later
add the OCI files too.)

``load`` checks every blob against its digest before anything enters the store: a
damaged or altered file is refused, as a registry client refuses a bad download.
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

from labtool.errors import LabtoolError, UsageError
from labtool.images import store
from labtool.images.listing import get


def save(names, output=None):
    """Write the images ``names`` (names or ids) into the tar ``output`` (None: standard output,
    for ``labtool save busybox > busybox.tar``)."""
    images = [(name, get(name)) for name in names]
    descriptors, blobs = [], []
    for name, image in images:
        manifest = json.loads(store.read_blob(image.manifest))
        for digest in [image.manifest, manifest["config"]["digest"]] + [d["digest"] for d in manifest["layers"]]:
            if digest not in blobs:
                blobs.append(digest)
        ref = store.normalize(name) if store.normalize(name) in store.entry_of(image).refs else None
        descriptor = {"mediaType": store.MEDIA_MANIFEST, "digest": image.manifest,
                      "size": len(store.read_blob(image.manifest))}
        if ref:
            descriptor["annotations"] = {store.REF_ANNOTATION: ref}
        descriptors.append(descriptor)
    if output is None:
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:     # a stream: no seeking back
            _write(tar, descriptors, blobs)
        sys.stdout.buffer.flush()
        return
    tmp = output + ".tmp"
    try:
        with tarfile.open(tmp, "w") as tar:
            _write(tar, descriptors, blobs)
        os.replace(tmp, output)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise LabtoolError(f"save: cannot write {output}: {e.strerror}") from None


def _write(tar, descriptors, blobs):
    _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    _add(tar, "index.json", json.dumps({"schemaVersion": 2, "manifests": descriptors}, indent=1).encode())
    for digest in blobs:
        _add(tar, "blobs/sha256/" + digest.split(":", 1)[1], store.read_blob(digest))


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def load(path=None):
    """Read the images of the OCI archive ``path`` (None: standard input, for ``labtool load <
    busybox.tar``) into the store; return Docker's lines ("Loaded image: busybox:latest", or
    "Loaded image ID: sha256:..." for an untagged one)."""
    fileobj = None
    if path is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty (use -i FILE or redirect: < FILE)")
        path, fileobj = "stdin", io.BytesIO(sys.stdin.buffer.read())    # blobs are read by name: seekable
    try:
        tar = tarfile.open(path, fileobj=fileobj)
    except OSError as e:
        raise LabtoolError(f"load: cannot read {path}: {e.strerror}") from None
    except tarfile.TarError:
        raise LabtoolError(f"load: {path} is not a tar archive") from None
    with tar, store.writing():
        def blob(digest):
            try:
                data = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
            except (KeyError, AttributeError):
                raise LabtoolError(f"load: {path} lacks the blob {digest}") from None
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                raise LabtoolError(f"load: the blob {digest} in {path} does not match its digest")
            return data
        try:
            index = json.loads(tar.extractfile("index.json").read())
        except (KeyError, AttributeError, ValueError):
            raise LabtoolError(f"load: {path} is not an OCI archive (no index.json; "
                               "labtool loads what labtool save or skopeo's oci-archive writes)") from None
        lines = []
        for descriptor in index.get("manifests", []):
            manifest = json.loads(blob(descriptor["digest"]))
            config_bytes = blob(manifest["config"]["digest"])
            config = json.loads(config_bytes)
            layers = []
            for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
                data = blob(layer["digest"])
                raw = gzip.decompress(data) if layer["mediaType"].endswith("gzip") else data
                if "sha256:" + hashlib.sha256(raw).hexdigest() != diff_id:
                    raise LabtoolError(f"load: the layer {layer['digest']} does not match the diff id {diff_id}")
                store.write_blob(data)
                store.unpack_layer(raw, diff_id)
                layers.append(layer)
            ref = descriptor.get("annotations", {}).get(store.REF_ANNOTATION)
            store.write_blob(config_bytes)
            image = store.store_manifest(ref, blob(descriptor["digest"]))
            lines.append(f"Loaded image: {ref}" if ref else f"Loaded image ID: {image.id}")
    return lines
