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
    manifest: str = ""    # "sha256:..." of the manifest (what ``labtool commit`` builds on)

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
            return from_manifest(descriptor["digest"], ref)
    return None


def from_manifest(digest, ref=""):
    """The ``Image`` a manifest describes (also when no tag names it any more)."""
    manifest = json.loads(read_blob(digest))
    config = json.loads(read_blob(manifest["config"]["digest"]))
    layers = [os.path.join(paths.layers_dir(), d.split(":", 1)[1]) for d in config["rootfs"]["diff_ids"]]
    return Image(ref, manifest["config"]["digest"], config, layers, digest)


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
    _whiteouts_to_overlay(tmp)
    os.rename(tmp, target)
    return target


def _whiteouts_to_overlay(top):
    """Turn the OCI whiteout files of a layer into overlayfs's own marks, so that the
    unpacked layer can be a lowerdir (OCI image-spec, layer.md, "Whiteouts")::

        dir/.wh.NAME      "NAME was deleted"       -> a character device 0:0 named NAME
        dir/.wh..wh..opq  "dir replaces the below" -> the xattr trusted.overlay.opaque=y on dir
    """
    from labtool import overlay

    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            if not name.startswith(".wh."):
                continue
            os.unlink(os.path.join(dirpath, name))
            if name == ".wh..wh..opq":
                overlay.make_opaque(dirpath)
            else:
                overlay.make_whiteout(os.path.join(dirpath, name[len(".wh."):]))


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
    descriptors, diff_ids = [], []
    for tar_bytes in layer_tars:
        descriptor, diff_id = _store_layer(tar_bytes)
        descriptors.append(descriptor)
        diff_ids.append(diff_id)
    return _store_image(ref, descriptors, dict(config, rootfs={"type": "layers", "diff_ids": diff_ids}))


def add_layer(parent, ref, tar_bytes, history):
    """Store a new image: the layers of ``parent`` (an ``Image``), one more layer on top,
    and ``parent``'s config with ``history`` appended (what ``labtool commit`` does).
    The parent's layers are shared, not copied: only the new layer is written."""
    manifest = json.loads(read_blob(parent.manifest))
    descriptor, diff_id = _store_layer(tar_bytes)
    config = json.loads(json.dumps(parent.config))            # a deep copy
    config["rootfs"]["diff_ids"].append(diff_id)
    config["history"] = config.get("history", []) + [history]
    config["created"] = history["created"]
    return _store_image(ref, manifest["layers"] + [descriptor], config)


def _store_layer(tar_bytes):
    """Write one uncompressed layer tar as a gzip'd blob and unpack it; return its
    descriptor and its diff id (the sha256 of the tar itself)."""
    import gzip
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    gz = gzip.compress(tar_bytes, mtime=0)
    unpack_layer(tar_bytes, diff_id)
    return {"mediaType": MEDIA_LAYER, "digest": write_blob(gz), "size": len(gz)}, diff_id


def _store_image(ref, layer_descriptors, config):
    """Write the config and the manifest of an image, and tag it ``ref`` in index.json."""
    ref = normalize(ref)
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


def untag(ref):
    """Remove the tag ``ref`` from index.json. Blobs and unpacked layers stay: other images
    and existing containers may share them."""
    _update_index(normalize(ref), None)


def _update_index(ref, descriptor):
    """Point tag ``ref`` at ``descriptor`` (None: remove the tag)."""
    import fcntl

    images = paths.images_dir()
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(images, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index = _read_index()
        others = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_ANNOTATION) != ref]
        index["manifests"] = others + ([descriptor] if descriptor else [])
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


# --- registry: pulled images in, an image's blobs out (labtool/images/registry.py) ---------
# Kept together at the end of the module: what ``labtool pull`` and ``labtool push`` need.

REPO_DIGEST_ANNOTATION = "io.labtool.repo-digest"   # the registry's digest of a pulled image


def staging_dir():
    """Where a pull downloads blobs before they are checked: inside the store, so that
    moving them in is a rename on the same file system."""
    os.makedirs(paths.images_dir(), exist_ok=True)
    return paths.images_dir()


def has_blob(digest):
    return os.path.exists(_blob_path(digest))


def repo_digest(ref):
    """The registry digest recorded when ``ref`` was pulled, or None."""
    ref = normalize(ref)
    for name, descriptor in list_images():
        if name == ref:
            return descriptor.get("annotations", {}).get(REPO_DIGEST_ANNOTATION)
    return None


def _layer_tar(media_type, blob):
    """The uncompressed tar of a layer blob, whichever compression its media type names."""
    import gzip

    if media_type.endswith("gzip") or blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if media_type.endswith("zstd"):
        from labtool.errors import LabtoolError

        raise LabtoolError(f"a zstd-compressed layer ({media_type}): labtool reads gzip'd and plain tar layers")
    return blob


def import_pulled(ref, media_type, manifest_bytes, config_bytes, blob_dir, digest, progress=None):
    """Add a pulled image to the store, its manifest and blobs kept byte for byte (so their
    digests stay the registry's). ``blob_dir`` holds the downloaded, already checked layer
    blobs named by their hex digest; layers whose blob the store has are read from it.

    Each layer is unpacked (and its tar checked against the config's diff id) before anything
    is recorded; if one fails, the layers this call unpacked are removed again and the tag is
    not written, so a failed pull leaves nothing half-made.
    """
    import hashlib
    import shutil

    from labtool.errors import LabtoolError

    manifest = json.loads(manifest_bytes)
    config = json.loads(config_bytes)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest["layers"]):
        raise LabtoolError(f"{ref}: the manifest has {len(manifest['layers'])} layers, its config {len(diff_ids)}")
    made = []
    try:
        for layer, diff_id in zip(manifest["layers"], diff_ids):
            downloaded = os.path.join(blob_dir, layer["digest"].split(":", 1)[1])
            target = os.path.join(paths.layers_dir(), diff_id.split(":", 1)[1])
            if os.path.isdir(target):
                if progress and os.path.exists(downloaded):
                    progress(layer["digest"])
                continue
            with open(downloaded if os.path.exists(downloaded) else _blob_path(layer["digest"]), "rb") as f:
                tar_bytes = _layer_tar(layer.get("mediaType", ""), f.read())
            if "sha256:" + hashlib.sha256(tar_bytes).hexdigest() != diff_id:
                raise LabtoolError(f"layer {layer['digest']}: its content does not match "
                                   f"the config's diff id {diff_id}")
            made.append(unpack_layer(tar_bytes, diff_id))
            if progress:
                progress(layer["digest"])
        for layer in manifest["layers"]:
            downloaded = os.path.join(blob_dir, layer["digest"].split(":", 1)[1])
            if os.path.exists(downloaded):
                os.makedirs(os.path.dirname(_blob_path(layer["digest"])), exist_ok=True)
                os.replace(downloaded, _blob_path(layer["digest"]))
        write_blob(config_bytes)
        manifest_digest = write_blob(manifest_bytes)
    except BaseException:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    descriptor = {"mediaType": media_type, "digest": manifest_digest, "size": len(manifest_bytes),
                  "annotations": {REF_ANNOTATION: normalize(ref), REPO_DIGEST_ANNOTATION: digest}}
    _update_index(normalize(ref), descriptor)
    return find(ref)


def image_blobs(image):
    """What pushing ``image`` sends: (manifest media type, manifest bytes as stored,
    [config descriptor, layer descriptors...])."""
    manifest_bytes = read_blob(image.manifest)
    manifest = json.loads(manifest_bytes)
    media_type = manifest.get("mediaType") or MEDIA_MANIFEST
    return media_type, manifest_bytes, [manifest["config"]] + manifest["layers"]
