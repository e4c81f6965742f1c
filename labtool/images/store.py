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

import contextlib
import json
import os
from dataclasses import dataclass

from labtool import paths, units

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
    return [(m["annotations"][REF_ANNOTATION], m) for m in _read_index()["manifests"]
            if m.get("annotations", {}).get(REF_ANNOTATION)]


def find(ref):
    """Return the ``Image`` for ``ref`` (a name[:tag], or an image id: full, ``sha256:...``,
    or a unique prefix, as ``docker run 6ad788b83172`` takes), or None when the store
    does not have it."""
    name = normalize(ref)
    for tag, descriptor in list_images():
        if tag == name:
            return from_manifest(descriptor["digest"], name)
    return find_by_id(ref)


def from_manifest(digest, ref=""):
    """The ``Image`` a manifest describes (also when no tag names it any more)."""
    manifest = json.loads(read_blob(digest))
    config = json.loads(read_blob(manifest["config"]["digest"]))
    layers = [os.path.join(paths.layers_dir(), d.split(":", 1)[1]) for d in config["rootfs"]["diff_ids"]]
    return Image(ref, manifest["config"]["digest"], config, layers, digest)


# --- every image, tagged or not, and how images descend from each other -------------------
#
# Docker keeps an image for every step of a build ("intermediate images", untagged), and
# remembers which image each one was made from (its parent): the build cache, ``history``
# and ``rmi`` need that. Here every image is an entry of index.json; an untagged one has
# no ref-name annotation, and the parent is an annotation of labtool's own.

PARENT_ANNOTATION = "org.labtool.image.parent"


@dataclass
class Entry:
    manifest: str         # "sha256:..." of the manifest
    refs: list            # its tags, maybe none
    parent: str = ""      # the image id it was built on ("" if none or unknown)

    @property
    def id(self):
        """The image id: the digest of its config (read from the manifest)."""
        return json.loads(read_blob(self.manifest))["config"]["digest"]


def entries():
    """Every image in the store once (by manifest), with all its tags."""
    found = {}
    for m in _read_index()["manifests"]:
        notes = m.get("annotations", {})
        entry = found.setdefault(m["digest"], Entry(m["digest"], []))
        if notes.get(REF_ANNOTATION):
            entry.refs.append(notes[REF_ANNOTATION])
        entry.parent = entry.parent or notes.get(PARENT_ANNOTATION, "")
    return list(found.values())


def entry_of(image):
    """The index entry of an ``Image``."""
    return next((e for e in entries() if e.manifest == image.manifest), Entry(image.manifest, []))


def find_by_id(text):
    """The image whose id is ``text`` or starts with it (``sha256:`` optional); None if none.
    Two images matching a short prefix is an error, as in Docker."""
    import re

    if not re.fullmatch(r"(sha256:)?[0-9a-f]{1,64}", text):
        return None
    wanted = text.split(":")[-1]
    matches = {}
    for entry in entries():
        image_id = entry.id
        if image_id.split(":", 1)[1].startswith(wanted):
            matches.setdefault(image_id, entry)
    if len(matches) > 1:
        from labtool.errors import LabtoolError

        raise LabtoolError(f"multiple images match the id prefix '{text}': give more of the id")
    if not matches:
        return None
    entry = next(iter(matches.values()))
    return from_manifest(entry.manifest, entry.refs[0] if entry.refs else "")


def parent_of(image_id):
    """The id of the image ``image_id`` was built on, "" if none is known."""
    return next((e.parent for e in entries() if e.parent and e.id == image_id), "")


def children_of(image_id):
    """The entries of images built directly on ``image_id``."""
    return [e for e in entries() if e.parent == image_id]


def tag(image, ref):
    """``labtool tag``: one more name for an existing image (an ``Image``)."""
    _edit_index(_tagged(normalize(ref), _descriptor(image.manifest, ref=normalize(ref),
                                                    parent=entry_of(image).parent)))


def delete(image):
    """Remove an image (all its tags) from index.json. Its blobs and layers stay until
    ``collect_garbage`` finds nothing uses them any more."""
    _edit_index(lambda manifests: [m for m in manifests if m["digest"] != image.manifest])


@contextlib.contextmanager
def writing():
    """Held (shared) while something writes blobs and layers before its image is in index.json
    (a build, a load): the garbage collector, which needs it alone, leaves the store alone."""
    import fcntl

    os.makedirs(paths.images_dir(), exist_ok=True)
    fd = os.open(os.path.join(paths.images_dir(), ".writers"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def collect_garbage(in_use_manifests=()):
    """Delete the blobs and unpacked layers that no image of index.json, and no manifest in
    ``in_use_manifests`` (those of containers), refers to. Returns the bytes freed.

    Not while a build or a load writes (see ``writing``): then nothing is deleted this time,
    the next ``rmi`` or ``image prune`` collects it."""
    import fcntl
    import shutil

    os.makedirs(paths.images_dir(), exist_ok=True)
    writers = os.open(os.path.join(paths.images_dir(), ".writers"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(writers)
        return 0
    try:
        return _collect(in_use_manifests, shutil)
    finally:
        os.close(writers)


def _collect(in_use_manifests, shutil):
    keep_blobs, keep_layers = set(), set()
    with paths.locked(os.path.join(paths.images_dir(), ".lock")):
        for manifest in [m["digest"] for m in _read_index()["manifests"]] + list(in_use_manifests):
            try:
                data = json.loads(read_blob(manifest))
                config = json.loads(read_blob(data["config"]["digest"]))
            except (OSError, ValueError, KeyError):
                continue
            keep_blobs.update([manifest, data["config"]["digest"]] + [d["digest"] for d in data["layers"]])
            keep_layers.update(d.split(":", 1)[1] for d in config["rootfs"]["diff_ids"])
        freed = 0
        blobs = os.path.join(paths.images_dir(), "blobs", "sha256")
        for name in os.listdir(blobs) if os.path.isdir(blobs) else []:
            if "sha256:" + name not in keep_blobs and not name.endswith(".tmp"):
                freed += os.path.getsize(os.path.join(blobs, name))
                os.unlink(os.path.join(blobs, name))
        layers = paths.layers_dir()
        for name in os.listdir(layers) if os.path.isdir(layers) else []:
            path = os.path.join(layers, name)
            if name.split(".")[0] in keep_layers or name.startswith("."):
                continue
            if os.path.isdir(path):
                freed += units.tree_size(path)
                shutil.rmtree(path)
            else:
                os.unlink(path)                 # a layer's remembered size
    return freed


def layer_size(layer_dir):
    """``units.tree_size`` of an unpacked layer, remembered next to it (layers never change)."""
    note = layer_dir + ".size"
    try:
        with open(note) as f:
            return int(f.read())
    except (OSError, ValueError):
        size = units.tree_size(layer_dir) if os.path.isdir(layer_dir) else 0
    try:
        with open(note, "w") as f:
            f.write(str(size))
    except OSError:
        pass
    return size


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


def add_image(ref, layer_tars, config, parent=""):
    """Store an image made of uncompressed layer tars and a config; tag it ``ref``
    (None: an untagged image, like a build's intermediate images).

    Fills in ``config.rootfs.diff_ids``, writes gzip'd layer blobs, the config, the
    manifest, and records the image in index.json (under a lock: builds may run at once).
    """
    descriptors, diff_ids = [], []
    for tar_bytes in layer_tars:
        descriptor, diff_id = _store_layer(tar_bytes)
        descriptors.append(descriptor)
        diff_ids.append(diff_id)
    return _store_image(ref, descriptors, dict(config, rootfs={"type": "layers", "diff_ids": diff_ids}), parent)


def add_layer(parent, ref, tar_bytes, history, config=None):
    """Store a new image: the layers of ``parent`` (an ``Image``), one more layer on top
    (``tar_bytes`` None: none, a metadata-only step), and ``parent``'s config (or the
    ``config`` given) with ``history`` appended (what ``labtool commit`` and each build
    step do). The parent's layers are shared, not copied: only the new layer is written."""
    manifest = json.loads(read_blob(parent.manifest))
    config = json.loads(json.dumps(config if config is not None else parent.config))   # a deep copy
    layers = manifest["layers"]
    if tar_bytes is not None:
        descriptor, diff_id = _store_layer(tar_bytes)
        config["rootfs"]["diff_ids"].append(diff_id)
        layers = layers + [descriptor]
    else:
        history = dict(history, empty_layer=True)
    config["history"] = config.get("history", []) + [history]
    config["created"] = history["created"]
    return _store_image(ref, layers, config, parent.id)


def _store_layer(tar_bytes):
    """Write one uncompressed layer tar as a gzip'd blob and unpack it; return its
    descriptor and its diff id (the sha256 of the tar itself)."""
    import gzip
    import hashlib

    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    gz = gzip.compress(tar_bytes, mtime=0)
    unpack_layer(tar_bytes, diff_id)
    return {"mediaType": MEDIA_LAYER, "digest": write_blob(gz), "size": len(gz)}, diff_id


def _store_image(ref, layer_descriptors, config, parent=""):
    """Write the config and the manifest of an image, and record it in index.json: tagged
    ``ref``, or untagged when ``ref`` is None. ``parent``: the image id it was made from."""
    ref = normalize(ref) if ref else None
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": write_blob(config_bytes), "size": len(config_bytes)},
        "layers": layer_descriptors,
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    digest = write_blob(manifest_bytes)
    _edit_index(_tagged(ref, _descriptor(digest, ref, parent)))
    return from_manifest(digest, ref or "")


def store_manifest(ref, manifest_bytes):
    """Record a manifest whose config and layers are in the store already (``load``, a
    pull): its bytes are kept as they are, so that its digest stays the same."""
    digest = write_blob(manifest_bytes)
    ref = normalize(ref) if ref else None
    _edit_index(_tagged(ref, _descriptor(digest, ref)))
    return from_manifest(digest, ref or "")


def _descriptor(manifest_digest, ref=None, parent=""):
    """The entry of index.json for one image (and one of its tags, if ``ref``)."""
    notes = {}
    if ref:
        notes[REF_ANNOTATION] = ref
    if parent:
        notes[PARENT_ANNOTATION] = parent
    descriptor = {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest,
                  "size": os.path.getsize(_blob_path(manifest_digest))}
    if notes:
        descriptor["annotations"] = notes
    return descriptor


def _tagged(ref, descriptor):
    """An index edit: add ``descriptor``; a tag moves (the image it named stays, untagged,
    as Docker's ``<none>`` images); an untagged entry of the same image goes."""
    def edit(manifests):
        digest = descriptor["digest"]
        moved = [m for m in manifests if ref and m.get("annotations", {}).get(REF_ANNOTATION) == ref]
        kept = [m for m in manifests if m not in moved]
        if ref:
            kept = [m for m in kept if m["digest"] != digest or m.get("annotations", {}).get(REF_ANNOTATION)]
        elif any(m["digest"] == digest for m in kept):
            return kept                          # already in the store
        for old in moved:
            if old["digest"] != digest and not any(m["digest"] == old["digest"] for m in kept):
                notes = {k: v for k, v in old.get("annotations", {}).items() if k != REF_ANNOTATION}
                kept.append(dict({k: v for k, v in old.items() if k != "annotations"},
                                 **({"annotations": notes} if notes else {})))
        return kept + [descriptor]
    return edit


def untag(ref):
    """Remove the tag ``ref``. The image stays (untagged) when no other tag names it:
    ``labtool rmi`` decides whether to delete it. Blobs and unpacked layers stay: other
    images and existing containers may share them."""
    ref = normalize(ref)

    def edit(manifests):
        gone = [m for m in manifests if m.get("annotations", {}).get(REF_ANNOTATION) == ref]
        kept = [m for m in manifests if m not in gone]
        for old in gone:
            if not any(m["digest"] == old["digest"] for m in kept):
                notes = {k: v for k, v in old.get("annotations", {}).items() if k != REF_ANNOTATION}
                kept.append(dict({k: v for k, v in old.items() if k != "annotations"},
                                 **({"annotations": notes} if notes else {})))
        return kept
    _edit_index(edit)


def _update_index(ref, descriptor):
    """Point tag ``ref`` at ``descriptor`` (None: remove the tag)."""
    if descriptor is None:
        untag(ref)
    else:
        _edit_index(_tagged(normalize(ref), descriptor))


def _edit_index(edit):
    """Change index.json with ``edit(manifests) -> manifests``, under the store's lock, and
    replace the file in one rename (a reader sees the old or the new index, never half)."""
    images = paths.images_dir()
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with paths.locked(os.path.join(images, ".lock")):
        index = _read_index()
        index["manifests"] = edit(index["manifests"])
        tmp = os.path.join(images, f"index.json.{os.getpid()}.tmp")
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
