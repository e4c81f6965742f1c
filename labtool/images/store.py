"""The image store: an OCI image layout, so that other tools (skopeo, umoci) can read it.

Layout (see the OCI image-spec, image-layout.md)::

    images/oci-layout                  {"imageLayoutVersion": "1.0.0"}
    images/index.json                  one manifest per tag, named by the annotation
                                       "org.opencontainers.image.ref.name": "busybox:latest"
    images/blobs/sha256/<hex>          manifests, configs and gzip'd tar layers, named by
                                       the sha256 of their bytes (content addressing)
    layers/<diff-id hex>/              each layer unpacked once (the tar's sha256 is its
                                       "diff id"); containers read their files from here

An image is: a manifest (which config, which layers) + a config (env, cmd, history).

(``labtool run`` only reads the store: the modules that write it, hashlib, gzip and
tarfile, are imported where they are used, to keep container start-up fast.)
"""

import json
import os
from dataclasses import dataclass

from labtool import paths

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass
class Image:
    ref: str              # "busybox:latest"
    id: str               # "sha256:..." of the config, like Docker's image id
    config: dict          # the OCI image config (config.Env, config.Cmd, rootfs, history)
    layers: list          # unpacked layer directories, lowest first

    @property
    def env(self):
        return self.config.get("config", {}).get("Env") or []

    @property
    def cmd(self):
        return self.config.get("config", {}).get("Cmd") or []

    @property
    def entrypoint(self):
        return self.config.get("config", {}).get("Entrypoint") or []


def normalize(ref):
    """``busybox`` -> ``busybox:latest`` (the tag Docker assumes when none is given)."""
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last or "@" in last else f"{ref}:latest"


def _blob_path(digest):
    algo, hexdigest = digest.split(":", 1)
    return os.path.join(paths.images_dir(), "blobs", algo, hexdigest)


def read_blob(digest):
    with open(_blob_path(digest), "rb") as f:
        return f.read()


def _read_index():
    try:
        with open(os.path.join(paths.images_dir(), "index.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"schemaVersion": 2, "manifests": []}


def list_images():
    """Every tagged image, as (ref, manifest descriptor) pairs."""
    return [(m.get("annotations", {}).get(REF_ANNOTATION), m) for m in _read_index()["manifests"]]


def find(ref):
    """Return the ``Image`` for ``ref``, or None when the store does not have it."""
    ref = normalize(ref)
    for name, descriptor in list_images():
        if name == ref:
            manifest = json.loads(read_blob(descriptor["digest"]))
            config = json.loads(read_blob(manifest["config"]["digest"]))
            layers = [os.path.join(paths.layers_dir(), d.split(":", 1)[1])
                      for d in config["rootfs"]["diff_ids"]]
            return Image(ref, manifest["config"]["digest"], config, layers)
    return None


def write_blob(data):
    """Store bytes under their sha256; return the descriptor digest."""
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(digest)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return digest


def unpack_layer(tar_bytes, diff_id):
    """Unpack a layer tar once into ``layers/<hex>``; return that directory."""
    import io
    import tarfile
    import tempfile

    target = os.path.join(paths.layers_dir(), diff_id.split(":", 1)[1])
    if os.path.isdir(target):
        return target
    os.makedirs(paths.layers_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=paths.layers_dir(), prefix=".unpack-")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        if hasattr(tarfile, "tar_filter"):   # Python >= 3.11.4 / 3.12
            tar.extractall(tmp, filter=_safe_paths_keep_modes)
        else:
            tar.extractall(tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, target)
    return target


def _safe_paths_keep_modes(member, path):
    """Refuse members that would land outside the layer (absolute paths, "..", links out),
    as tarfile's "tar" filter does, but keep their modes: an image's /tmp is 1777."""
    import tarfile

    tarfile.tar_filter(member, path)
    return member


def add_image(ref, layer_tars, config):
    """Store an image made of uncompressed layer tars and a config; tag it ``ref``.

    Fills in ``config.rootfs.diff_ids``, writes gzip'd layer blobs, the config, the
    manifest, and records the tag in index.json (under a lock: builds may run at once).
    """
    import gzip
    import hashlib

    ref = normalize(ref)
    layer_descriptors, diff_ids = [], []
    for tar_bytes in layer_tars:
        diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
        gz = gzip.compress(tar_bytes, mtime=0)
        layer_descriptors.append({"mediaType": MEDIA_LAYER, "digest": write_blob(gz), "size": len(gz)})
        diff_ids.append(diff_id)
        unpack_layer(tar_bytes, diff_id)
    config = dict(config, rootfs={"type": "layers", "diff_ids": diff_ids})
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": write_blob(config_bytes), "size": len(config_bytes)},
        "layers": layer_descriptors,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    descriptor = {"mediaType": MEDIA_MANIFEST, "digest": write_blob(manifest_bytes),
                  "size": len(manifest_bytes), "annotations": {REF_ANNOTATION: ref}}
    _update_index(ref, descriptor)
    return find(ref)


def _update_index(ref, descriptor):
    import fcntl

    images = paths.images_dir()
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(images, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = _read_index()
        index["manifests"] = [m for m in index["manifests"]
                              if m.get("annotations", {}).get(REF_ANNOTATION) != ref] + [descriptor]
        tmp = os.path.join(images, "index.json.tmp")
        with open(tmp, "w") as f:
            json.dump(index, f, indent=1)
        os.replace(tmp, os.path.join(images, "index.json"))


def layer_tar(files):
    """Build an uncompressed, reproducible layer tar from (TarInfo, bytes or None) pairs.

    Fixed owners and times make the same content give the same digest on every machine.
    """
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in files:
            info.mtime, info.uname, info.gname = 0, "", ""
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
