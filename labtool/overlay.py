"""Step 04: overlayfs, so containers share the image instead of copying it.

The union filesystem of the slides ("Union FS"): overlayfs stacks directories
(Documentation/filesystems/overlayfs.rst in the kernel sources, man 8 mount)::

    lowerdir=L2:L1   the image's layers, read-only, shared by every container of the image
    upperdir=U       this container's own changes: new files, copied-up files, whiteouts
    workdir=W        overlayfs's scratch space, on the same filesystem as U

Reading a file finds it in the highest layer that has it. Writing a file of the image
first copies it up into U ("copy-up"); deleting one leaves a "whiteout" in U: a character
device 0:0 with the deleted name. A directory deleted and made again is "opaque" (the
extended attribute ``trusted.overlay.opaque=y``): nothing below it shows through.
Starting a container costs one mount(2) instead of a copy of the whole image.

Each container directory holds, like Docker's overlay2 driver::

    upper/     the container's changes, kept until ``labtool rm``: ``diff`` and ``commit`` read it
    work/      overlayfs's scratch space
    rootfs/    the merged view: the container's /
    storage.json  which driver, and the directories above (``docker inspect``'s GraphDriver)

Between the image's layers and ``upper/`` lies the *init layer* (``init_layer``): the
mount points every container needs, shared by all of them.

Where overlayfs is missing (``mount`` fails with ENODEV or EINVAL), or when
``LABTOOL_STORAGE=vfs`` asks for it, the root is a full copy instead: Docker's ``vfs``
driver, slow and big, but it works on any filesystem.
"""

import errno
import json
import os
import shutil
import stat

from labtool import explain, mounts, paths, syscalls
from labtool.engine import containers

OPAQUE = "trusted.overlay.opaque"   # the xattr overlayfs puts on an opaque directory


def mount_overlay(layers, upper, work, target, volatile=False):
    """Mount ``layers`` (lowest first) + ``upper`` at ``target``.

    ``volatile`` (for ``run --rm``, as podman does): overlayfs skips every sync of the upper
    layer, also the one at unmount (1 to 2 ms on this lab's disk). Its changes would not
    survive a crash; a container deleted when it exits has no use for them anyway."""
    for d in (upper, work, target):
        os.makedirs(d, exist_ok=True)
    # overlayfs lists lowerdirs top first: the last layer of the image wins.
    options = f"lowerdir={':'.join(reversed(layers))},upperdir={upper},workdir={work}"
    shown = f"mount -t overlay -o lowerdir=<{len(layers)} layer(s)>,upperdir,workdir"
    if volatile:
        try:
            syscalls.mount("overlay", target, "overlay", 0, options + ",volatile")
            explain.say("overlay", f"{shown},volatile {target}",
                        "image layers shared, changes go to upperdir (--rm: never synced to disk)")
            return
        except OSError as e:
            if e.errno != errno.EINVAL:      # EINVAL: a kernel before 5.10 has no "volatile"
                raise
    explain.say("overlay", f"{shown} {target}", "image layers shared, changes go to upperdir")
    syscalls.mount("overlay", target, "overlay", 0, options)


# --- whiteouts: how a layer says "deleted" ------------------------------------------------

def is_whiteout(path):
    """A deleted file, as overlayfs marks it: a character device with number 0:0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path):
    """A directory that hides whatever the layers below have at the same path."""
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def make_whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def make_opaque(path):
    os.setxattr(path, OPAQUE, b"y", follow_symlinks=False)


# --- the container's storage -------------------------------------------------------------

def storage(name_or_id):
    """Container NAME's driver and directories, lowest layer first (for the layer picture
    of a notebook: ``storage("web")["LowerDir"]``, ``["UpperDir"]``)."""
    from labtool.engine import containers

    return storage_of(paths.container_dir(containers.find(name_or_id).id))


def storage_of(container_dir):
    """The storage record of a container directory (driver and directories); {} if none."""
    try:
        with open(os.path.join(container_dir, "storage.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _why_not_overlay():
    if os.environ.get("LABTOOL_STORAGE") == "vfs":
        return "LABTOOL_STORAGE=vfs asks for it"
    return ""


def init_layer():
    """Docker's "init layer": the mount points every container needs (/proc, /sys, /dev, and
    the empty /etc/hostname, /etc/hosts, /etc/resolv.conf that labtool binds its own files
    onto), made on the host, so that even root of a user namespace (who may not create them
    in the image's directories) has them, and a layer of their own, so that they do not count
    as the container's changes.

    Docker's overlay2 makes one per container (``<id>-init``). Its content is the same for
    every container, so labtool makes it once per labtool root (``lib/init``) and every
    container has it as its top lower layer: read-only, like an image layer (0.5 ms saved on
    each start). Made aside and renamed into place: two first containers at once both work."""
    from labtool.rootfs import make_mountpoints

    init = os.path.join(paths.lib_dir(), "init")
    if not os.path.isdir(init):
        tmp = f"{init}.{os.getpid()}.tmp"
        make_mountpoints(tmp)
        try:
            os.rename(tmp, init)
        except OSError:                           # another labtool made it a moment ago
            shutil.rmtree(tmp, ignore_errors=True)
    return init


def _use_vfs(c, lower, why):
    from labtool.rootfs import copy_layers

    explain.say("overlay", f"vfs driver: copy {len(lower)} layer(s) -> <rootfs>", why)
    copy_layers(lower, c.rootfs)
    c.storage = "vfs"


def _write_storage(c, lower):
    record = {"Driver": c.storage, "Image": c.image.id, "ImageRef": c.image.ref,
              "ImageManifest": c.image.manifest, "LowerDir": lower, "MergedDir": c.rootfs}
    if c.storage == "overlay":
        record.update(UpperDir=os.path.join(c.dir, "upper"), WorkDir=os.path.join(c.dir, "work"))
    containers.write_json(os.path.join(c.dir, "storage.json"), record)


# --- the step, as runtime.py calls it ----------------------------------------------------

def prepare(c):
    """Host side: the container's root is the image's layers with its own upper layer on top;
    then the mounts it asked for (volumes, bind mounts, tmpfs: ``mounts.prepare``).

    Like Docker's overlay2 "merged" directory, the mount is made on the host, so that
    ``findmnt`` there shows it; teardown (rootfs.teardown) unmounts it.
    """
    lower = list(c.image.layers) + [init_layer()]
    why_not = _why_not_overlay()
    if not why_not:
        try:
            mount_overlay(lower, os.path.join(c.dir, "upper"), os.path.join(c.dir, "work"), c.rootfs,
                          volatile=getattr(c.spec, "remove", False))
            c.storage = "overlay"
        except OSError as e:
            if e.errno not in (errno.ENODEV, errno.EINVAL):
                raise
            why_not = f"overlay cannot be mounted here: {os.strerror(e.errno)}"
    if why_not:
        _use_vfs(c, lower, why_not)
    _write_storage(c, lower)
    mounts.prepare(c)


def before_pivot_root(c):
    """In the child, with the host's files still in view: bind mounts, tmpfs, read-only root."""
    mounts.before_pivot_root(c)
