"""Step 04: what a container changed in its files, ``labtool diff`` and ``labtool commit``.

With overlayfs (``overlay.py``) the answer is already on disk: the container's upperdir
holds exactly its changes. ``diff`` reads it like ``docker diff``, one line per path::

    A /new-file        added: in the upperdir, not in the image
    C /etc             changed: in the upperdir and in the image (copied up, or a
                       directory something inside it changed in)
    D /etc/group       deleted: a whiteout (a character device 0:0) in the upperdir

A directory deleted and made again is "opaque": the image's entries in it are gone (D)
even though no whiteout names them. With the ``vfs`` driver there is no upperdir, and
``diff`` has to compare the container's copy with the image, file by file, as Docker's
"naive diff" does.

``commit`` packs the changes into one more layer, a tar, and stores a new image: the
old layers (shared, untouched) plus this one. In a tar a deletion cannot be a device
0:0 (OCI image-spec, layer.md, "Whiteouts"): it is written as an empty file ``.wh.NAME``,
and an opaque directory gets a file ``.wh..wh..opq``. ``images/store.py`` turns them back
into overlayfs's marks when it unpacks the layer.
"""

import datetime
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass

from labtool import overlay, paths
from labtool.engine import containers
from labtool.errors import LabtoolError, UsageError


@dataclass
class Change:
    kind: str        # "A" added, "C" changed, "D" deleted
    path: str        # as the container sees it: "/etc/passwd"

    def __str__(self):
        return f"{self.kind} {self.path}"


# --- the image as layers: where a path is, if anywhere ------------------------------------

def find_in_layers(layers, path):
    """The host path of ``path`` in the topmost of ``layers`` (lowest first) that has it,
    or None when it is not in the image (never there, or deleted by a layer above)."""
    parts = [p for p in path.split("/") if p]
    for layer in reversed(layers):
        here, hidden_below = layer, False
        for i, part in enumerate(parts):
            here = os.path.join(here, part)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                here = None
                break
            if overlay.is_whiteout(here):
                return None                    # deleted in this layer
            last = i == len(parts) - 1
            if not last and not stat.S_ISDIR(st.st_mode):
                return None                    # a file here hides a whole directory below
            if not last and overlay.is_opaque(here):
                hidden_below = True            # this layer's directory replaces the ones below
        if here is not None:
            return here
        if hidden_below:
            return None
    return None


def names_in_layers(layers, path):
    """The names a directory of the image holds, all layers merged."""
    names = set()
    for layer in layers:
        d = os.path.join(layer, path.strip("/"))
        if os.path.isdir(d) and not os.path.islink(d):
            names.update(os.listdir(d))
    return {n for n in names if find_in_layers(layers, os.path.join(path, n))}


def _entries(top, path="/"):
    """(container path, host path) of everything below ``top``, parents first, by name;
    without going into other filesystems (a volume mounted in a vfs copy, say)."""
    for name in sorted(os.listdir(os.path.join(top, path.strip("/")))):
        inside = os.path.join(path, name)
        full = os.path.join(top, inside.strip("/"))
        yield inside, full
        if os.path.isdir(full) and not os.path.islink(full) and not os.path.ismount(full):
            yield from _entries(top, inside)


def _sort_key(change):
    # Docker's order: by path, parents before what is inside them ("/etc", "/etc/x", "/etc-2")
    return change.path.split("/")


# --- diff -------------------------------------------------------------------------------

def changes_in_upper(upper, lower):
    """The changes an overlay upperdir records over the ``lower`` layers."""
    found = []
    for path, full in _entries(upper):
        if overlay.is_whiteout(full):
            found.append(Change("D", path))
            continue
        in_image = find_in_layers(lower, path) is not None
        found.append(Change("C" if in_image else "A", path))
        if in_image and os.path.isdir(full) and overlay.is_opaque(full):
            mine = set(os.listdir(full))
            found += [Change("D", os.path.join(path, n)) for n in names_in_layers(lower, path) - mine]
    return sorted(found, key=_sort_key)


def changes_in_copy(rootfs, lower):
    """The changes of a vfs container: its copy compared with the image, entry by entry."""
    found = []
    for path, full in _entries(rootfs):
        image_path = find_in_layers(lower, path)
        if image_path is None:
            found.append(Change("A", path))
        elif _differs(os.lstat(full), os.lstat(image_path), full, image_path):
            found.append(Change("C", path))
        if image_path and os.path.isdir(full) and os.path.isdir(image_path) and not os.path.islink(full):
            gone = names_in_layers(lower, path) - set(os.listdir(full))
            found += [Change("D", os.path.join(path, n)) for n in gone]
    return sorted(found, key=_sort_key)


def _differs(mine, theirs, my_path, their_path):
    if stat.S_IFMT(mine.st_mode) != stat.S_IFMT(theirs.st_mode):
        return True
    if (mine.st_mode, mine.st_uid, mine.st_gid) != (theirs.st_mode, theirs.st_uid, theirs.st_gid):
        return True
    if stat.S_ISLNK(mine.st_mode):
        return os.readlink(my_path) != os.readlink(their_path)
    return (mine.st_size, mine.st_mtime_ns) != (theirs.st_size, theirs.st_mtime_ns)


def _storage(record):
    """The container's storage record; for containers of steps 01-02, the copy of its image."""
    storage = overlay.storage_of(paths.container_dir(record.id))
    if storage:
        return storage
    from labtool.images import store

    image = store.find(record.config.get("image", ""))
    if image is None:
        raise LabtoolError(f"the image of container {record.name or record.id[:12]} is gone")
    return {"Driver": "vfs", "LowerDir": image.layers, "Image": image.id, "ImageManifest": image.manifest,
            "MergedDir": os.path.join(paths.container_dir(record.id), "rootfs")}


def diff(name_or_id):
    """``labtool diff``: the list of Changes of a container (running or not)."""
    storage = _storage(containers.find(name_or_id))
    if storage["Driver"] == "overlay":
        return changes_in_upper(storage["UpperDir"], storage["LowerDir"])
    return changes_in_copy(storage["MergedDir"], storage["LowerDir"])


# --- commit -----------------------------------------------------------------------------

def _tar_entry(tar, full, name):
    info = tar.gettarinfo(full, arcname=name)
    if info is None:                    # a socket: nothing to keep
        return
    info.uname = info.gname = ""        # numeric owners only: names differ between hosts
    if info.isreg():
        with open(full, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def _whiteout_entry(tar, name):
    """An OCI whiteout: an empty file ``.wh.NAME`` next to where NAME was."""
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    tar.addfile(info)


def layer_from_upper(upper):
    """An uncompressed layer tar of an overlay upperdir, whiteouts in the OCI way."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, full in _entries(upper):
            name = path.lstrip("/")
            if overlay.is_whiteout(full):
                head, tail = os.path.split(name)
                _whiteout_entry(tar, os.path.join(head, ".wh." + tail))
                continue
            _tar_entry(tar, full, name)
            if os.path.isdir(full) and not os.path.islink(full) and overlay.is_opaque(full):
                _whiteout_entry(tar, os.path.join(name, ".wh..wh..opq"))
    return buf.getvalue()


def layer_from_changes(rootfs, changes):
    """An uncompressed layer tar of a vfs container's changes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for change in changes:
            name = change.path.lstrip("/")
            if change.kind == "D":
                head, tail = os.path.split(name)
                _whiteout_entry(tar, os.path.join(head, ".wh." + tail))
            else:
                _tar_entry(tar, os.path.join(rootfs, name), name)
    return buf.getvalue()


# Docker's reference grammar, simplified: lowercase path components, an optional tag
REFERENCE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                       r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?\Z")


def commit(name_or_id, ref):
    """``labtool commit CONTAINER IMAGE[:TAG]``: store the container's changes as a new image.

    Like ``docker commit``, the new image runs the container's command by default when
    one was given to ``run``. Returns the new ``store.Image``.
    """
    from labtool.images import store

    if not REFERENCE.match(ref):
        raise UsageError(f"invalid reference format: '{ref}' (lowercase letters, digits, . _ -, "
                         "and an optional :TAG)")
    record = containers.find(name_or_id)
    storage = _storage(record)
    if storage["Driver"] == "overlay":
        layer = layer_from_upper(storage["UpperDir"])
    else:
        layer = layer_from_changes(storage["MergedDir"], changes_in_copy(storage["MergedDir"], storage["LowerDir"]))
    parent = store.from_manifest(storage["ImageManifest"])
    args = record.config.get("process", {}).get("args") or []
    if args:
        parent.config.setdefault("config", {})["Cmd"] = args
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    history = {"created": now, "created_by": " ".join(args) or "labtool commit",
               "comment": f"labtool commit {record.name or record.id[:12]}"}
    return store.add_layer(parent, ref, layer, history)
