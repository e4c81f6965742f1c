"""Step 04: managed volumes, directories labtool keeps for containers (``docker volume``).

The slides' "Docker Managed Volume": the container asks for a path (``-v /var/lib/data``)
and the runtime finds it a home on the host, outside the container's own layers, so that
what is written there outlives the container and can be shared (``--volumes-from``).
A volume is just a directory with a name::

    volumes/<name>/_data          what the container sees at its mount point
    volumes/<name>/volume.json    name, creation time, labels (``docker volume inspect``)

``-v NAME:/path`` uses the volume NAME, made on first use; ``-v /path`` makes an anonymous
one, named by 64 random hex digits and labelled ``com.docker.volume.anonymous`` (as Docker
does). The first container that mounts an empty volume copies in what its image has at
that path, so that a volume on /etc starts with the image's /etc. ``labtool rm -v`` and
``run --rm`` remove a container's anonymous volumes; named ones stay until
``labtool volume rm``. A volume that any container uses, even an exited one, is kept.
"""

import json
import os
import re
import shutil
from dataclasses import dataclass, field

from labtool import paths, units
from labtool.errors import LabtoolError, UsageError

DRIVER = "local"
ANONYMOUS = "com.docker.volume.anonymous"      # Docker's label for a volume without a name
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")   # Docker's rule for local volume names


class VolumeNotFound(LabtoolError):
    def __init__(self, name):
        super().__init__(f"No such volume: {name}")


class VolumeInUse(LabtoolError):
    def __init__(self, name, users):
        super().__init__(f"remove {name}: volume is in use - [{', '.join(users)}]")


@dataclass
class Volume:
    name: str
    created_at: str = ""
    labels: dict = field(default_factory=dict)

    @property
    def path(self):
        return os.path.join(paths.volumes_dir(), self.name)

    @property
    def data(self):
        """The directory a container sees: ``volumes/<name>/_data``."""
        return os.path.join(self.path, "_data")

    @property
    def anonymous(self):
        return ANONYMOUS in self.labels

    def inspect(self):
        """The volume as ``docker volume inspect`` shows it."""
        return {"CreatedAt": self.created_at, "Driver": DRIVER, "Labels": self.labels or None,
                "Mountpoint": self.data, "Name": self.name, "Options": None, "Scope": "local"}


def check_name(name):
    if not NAME.match(name):
        raise UsageError(f'"{name}" includes invalid characters for a local volume name, only '
                         f'"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
                         f'directory, use absolute path')


def create(name="", labels=None):
    """Make a volume (named by 64 random hex digits when ``name`` is empty); an existing
    name is kept, as ``docker volume create`` does."""
    name = name or os.urandom(32).hex()
    check_name(name)
    try:
        return find(name)
    except VolumeNotFound:
        pass
    import datetime

    created = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    volume = Volume(name, created, dict(labels or {}))
    os.makedirs(volume.data, exist_ok=True)
    tmp = os.path.join(volume.path, "volume.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"Name": name, "CreatedAt": created, "Labels": volume.labels}, f, indent=1)
    os.replace(tmp, os.path.join(volume.path, "volume.json"))
    return volume


def create_anonymous():
    """The volume of ``-v /path``: a random name and the label that says "anonymous", so
    that ``rm -v``, ``run --rm`` and ``volume prune`` may remove it."""
    return create(labels={ANONYMOUS: ""})


def find(name):
    try:
        with open(os.path.join(paths.volumes_dir(), name, "volume.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        raise VolumeNotFound(name) from None
    return Volume(record["Name"], record.get("CreatedAt", ""), record.get("Labels") or {})


def all_volumes():
    top = paths.volumes_dir()
    names = sorted(os.listdir(top)) if os.path.isdir(top) else []
    return [find(name) for name in names if os.path.exists(os.path.join(top, name, "volume.json"))]


def users(name):
    """The ids of the containers (running or not) that mount volume ``name``."""
    from labtool.engine import containers

    return [r.id for r in containers.all_records()
            if any(m.get("Type") == "volume" and m.get("Name") == name for m in r.mounts)]


def remove(name):
    """Delete a volume and its data; refuse while a container uses it."""
    volume = find(name)
    in_use = users(name)
    if in_use:
        raise VolumeInUse(name, in_use)
    shutil.rmtree(volume.path)


def remove_anonymous(mount_records):
    """Remove the anonymous volumes among a removed container's mounts (``rm -v``),
    keeping any that another container still uses, as Docker does."""
    for entry in mount_records:
        if entry.get("Type") != "volume":
            continue
        try:
            if find(entry["Name"]).anonymous and not users(entry["Name"]):
                shutil.rmtree(os.path.join(paths.volumes_dir(), entry["Name"]))
        except VolumeNotFound:
            pass


def prune(everything=False):
    """Remove the volumes no container uses: anonymous ones only unless ``everything``
    (Docker 23+). Return the names removed and the bytes freed."""
    removed, freed = [], 0
    for volume in all_volumes():
        if (everything or volume.anonymous) and not users(volume.name):
            freed += units.tree_size(volume.data)      # the data, not our own volume.json
            shutil.rmtree(volume.path)
            removed.append(volume.name)
    return removed, freed


def is_empty(volume):
    return not os.listdir(volume.data)


def fill_from_image(volume, image_dir):
    """First use: copy what the image has at the mount point into the empty volume,
    owner and mode included, as Docker does (unless the volume already holds files)."""
    from labtool.rootfs import copy_layers

    if os.path.isdir(image_dir) and not os.path.islink(image_dir) and is_empty(volume):
        copy_layers([image_dir], volume.data)
        st = os.stat(image_dir)
        os.chown(volume.data, st.st_uid, st.st_gid)
        return True
    return False
