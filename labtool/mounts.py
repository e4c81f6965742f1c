"""Mounts: reading the mount table, and putting host paths into a container (step 04).

Part 1, the mount table. ``/proc/self/mountinfo`` (man 5 proc) lists every mount this
process can see, one per line: id, parent id, major:minor, root, mount point, options,
... ``-`` fstype source.

Part 2, the slides' "Docker Mount Points": what ``-v``, ``--tmpfs`` and ``--read-only`` do.
Every one of them is a mount(2) (man 2 mount; man 8 mount for the command line words)::

    -v /host/dir:/data       a bind mount: the same directory seen at a second place
                             (mount --bind; MS_BIND)
    -v /host/file:/f         a bind mount of a single file (the mount point is a file)
    -v NAME:/data, -v /data  a bind mount of a volume's directory (labtool/volumes.py)
    ...:ro                   then the bind is made read-only: a second call,
                             MS_REMOUNT|MS_BIND|MS_RDONLY (mount -o remount,bind,ro)
    --tmpfs /run             a fresh filesystem in memory (mount -t tmpfs)
    --read-only              the root's own mount remounted read-only; /dev, /proc, the
                             volumes and the tmpfs are mounts of their own and keep theirs

When: in the child, after it has its own (private) mount namespace and /proc, /dev are in
place, and before pivot_root, while the host's paths can still be named. The targets are
paths inside ``c.rootfs``, found without ever following a symlink out of it.

How read-only is ":ro"? A bind's MS_RDONLY is a property of that one mount, and whoever
may call mount(2) on it may remount it read-write again. Root in a container without a
user namespace that holds CAP_SYS_ADMIN can (``mount -o remount,rw,bind /data``): as of
step 04 alone (``--upto overlay``), or with ``--cap-add SYS_ADMIN``. Step 06 drops that
capability by default (capabilities.py), as Docker does. With ``--userns`` the container's
mount namespace belongs to a less privileged user namespace, and mount_namespaces(7),
"Restrictions on mount namespaces", applies: flags of mounts that come from a more
privileged mount namespace are *locked* there. So with ``--userns`` labtool makes these
mounts on the host side, before the container's namespaces exist, and its root cannot
make them writable again.
"""

import os
import re
from dataclasses import dataclass, field

from labtool import explain, syscalls
from labtool.errors import UsageError

# --- part 1: the mount table ---------------------------------------------------------------


def _unescape(field):
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...);
    # only those: any other character, non-ASCII included, is written as it is
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def mountinfo(pid="self"):
    """The mount table as a list of dicts with id, parent, mountpoint, fstype, source."""
    result = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            result.append({"id": int(fields[0]), "parent": int(fields[1]), "root": _unescape(fields[3]),
                           "mountpoint": _unescape(fields[4]), "options": fields[5],
                           "propagation": " ".join(fields[6:]),
                           "fstype": rest[0] if rest else "", "source": rest[1] if len(rest) > 1 else ""})
    return result


def mounts_under(path):
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    path = os.path.realpath(path)
    found = [m["mountpoint"] for m in mountinfo()
             if m["mountpoint"] == path or m["mountpoint"].startswith(path.rstrip("/") + "/")]
    return sorted(found, key=len, reverse=True)


def unmount_under(path):
    """Detach every mount at or below ``path``; return how many there were."""
    found = mounts_under(path)
    for mountpoint in found:
        try:
            syscalls.umount2(mountpoint, syscalls.MNT_DETACH)
        except OSError:
            pass
    return len(found)


# --- part 2: -v, --tmpfs, --volumes-from, as a user writes them ---------------------------

MODES = ("ro", "rw")
# --tmpfs options: mount flags (man 8 mount, "FILESYSTEM-INDEPENDENT MOUNT OPTIONS") ...
TMPFS_FLAGS = {"ro": syscalls.MS_RDONLY, "noexec": syscalls.MS_NOEXEC, "nosuid": syscalls.MS_NOSUID,
               "nodev": syscalls.MS_NODEV}
TMPFS_UNFLAGS = {"rw": "ro", "exec": "noexec", "suid": "nosuid", "dev": "nodev"}
# ... and tmpfs's own (man 5 tmpfs), passed on to the kernel as the mount's data
TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks")


def parse_volume(text, cwd=None):
    """``-v`` as Docker reads it, into a ``spec.Mount``::

        /ctr                 an anonymous volume at /ctr
        NAME:/ctr            the volume NAME (made on first use)
        /host:/ctr           a bind mount of a host file or directory (./host: from here)
        ...:ro  ...:rw       read-only, or read-write (the default)
    """
    from labtool.spec import Mount

    parts = text.split(":")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in MODES):
        parts = [None] + parts                     # "/ctr", "/ctr:ro": no source, an anonymous volume
    if len(parts) == 2:
        parts.append("rw")
    if len(parts) != 3:
        return _bad_volume(text, "too many ':'")
    source, target, mode = parts
    if source == "":
        return _bad_volume(text, "the source before ':' is empty")
    source = source or ""
    if mode not in MODES:
        return _bad_volume(text, f"invalid mode '{mode}' (use ro or rw)")
    if source.startswith(("./", "../")) or source in (".", ".."):
        source = os.path.abspath(os.path.join(cwd or os.getcwd(), source))
    kind = "bind" if source.startswith("/") else "volume"
    mount = Mount(type=kind, target=_clean(target), source=source, read_only=mode == "ro")
    problem = mount_problem(mount)
    return _bad_volume(text, problem) if problem else mount


def _clean(target):
    """``/run/lock/test/`` -> ``/run/lock/test``, as Docker records it (a relative path stays
    as it is, for mount_problem to refuse)."""
    return os.path.normpath(target) if target.startswith("/") else target


def _bad_volume(text, why):
    raise UsageError(f"invalid volume specification: '{text}': {why}")


def parse_tmpfs(text):
    """``--tmpfs /run[:size=64m,mode=1777,exec]`` into a ``spec.Mount``."""
    from labtool.spec import Mount

    target, _, options = text.partition(":")
    mount = Mount(type="tmpfs", target=_clean(target), options=[o for o in options.split(",") if o])
    problem = mount_problem(mount)
    if problem:
        raise UsageError(f"invalid --tmpfs '{text}': {problem}")
    return mount


def parse_volumes_from(text):
    """``--volumes-from CONTAINER[:ro|:rw]``: (container, mode); mode "" keeps each mount's own."""
    name, _, mode = text.partition(":")
    if not name or mode not in ("", *MODES):
        raise UsageError(f"invalid --volumes-from '{text}': use CONTAINER, CONTAINER:ro or CONTAINER:rw")
    return name, mode


def mount_problem(m):
    """What is wrong with a ``spec.Mount``, in words; "" when nothing is."""
    if m.type not in ("bind", "volume", "tmpfs"):
        return f"unknown mount type '{m.type}' (bind, volume or tmpfs)"
    if not m.target.startswith("/"):
        return f"the path in the container must be absolute, not '{m.target}'"
    if os.path.normpath(m.target) == "/":
        return "the container's / cannot be a mount point"
    if m.type == "bind" and not m.source.startswith("/"):
        return f"the host path must be absolute, not '{m.source}'"
    if m.type == "volume" and m.source:
        from labtool import volumes

        if not volumes.NAME.match(m.source):
            return (f"'{m.source}' is not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); "
                    "for a host directory give an absolute path or ./path")
    if m.type == "tmpfs":
        for option in m.options:
            key = option.partition("=")[0]
            if key not in TMPFS_FLAGS and key not in TMPFS_UNFLAGS and key not in TMPFS_DATA:
                return f"unknown tmpfs option '{option}'"
    return ""


def check_spec(spec):
    """Refuse a bad mount in a spec before anything is made (runtime.new_container)."""
    from labtool.engine import containers

    seen = set()
    for m in spec.mounts:
        problem = mount_problem(m)
        if problem:
            raise UsageError(f"invalid mount {m.target!r}: {problem}")
        target = os.path.normpath(m.target)
        if target in seen:
            raise UsageError(f"Duplicate mount point: {target}")
        seen.add(target)
    for text in spec.volumes_from:
        containers.find(parse_volumes_from(text)[0])


# --- part 3: what gets mounted where -------------------------------------------------------

@dataclass
class MountPoint:
    """One mount as it will be made (Docker's MountPoint; ``docker inspect``'s "Mounts")."""

    type: str                  # "bind", "volume" or "tmpfs"
    source: str                # the host path ("tmpfs" for a tmpfs)
    destination: str           # the path inside the container
    read_only: bool = False
    name: str = ""             # the volume's name
    options: list = field(default_factory=list)

    def record(self):
        entry = {"Type": self.type, "Source": self.source, "Destination": self.destination,
                 "Mode": "ro" if self.read_only else "", "RW": not self.read_only}
        if self.type == "volume":
            entry.update(Name=self.name, Driver="local")
        if self.options:
            entry["Options"] = self.options
        return entry


def plan(c):
    """Host side: turn the spec's mounts into MountPoints, making what they need: volumes
    (and their first-use copy of the image's files), missing host directories. Recorded in
    ``mounts.json`` as it goes, so that a failed start can remove what it made."""
    points = []
    for m in c.spec.mounts:
        points.append(_resolve(c, m))
        _record(c, points)
    taken = {os.path.normpath(p.destination) for p in points}
    for text in c.spec.volumes_from:
        for point in _mounts_of_container(*parse_volumes_from(text)):
            if os.path.normpath(point.destination) not in taken:     # -v wins over --volumes-from
                taken.add(os.path.normpath(point.destination))
                points.append(point)
    if points:
        _record(c, points)
    # parents before children: /data is mounted before /data/cache (as Docker sorts them)
    return sorted(points, key=lambda p: os.path.normpath(p.destination).count("/"))


def _resolve(c, m):
    from labtool import volumes

    if m.type == "tmpfs":
        return MountPoint("tmpfs", "tmpfs", m.target, m.read_only, options=list(m.options))
    if m.type == "bind":
        if not os.path.lexists(m.source):
            # Docker's -v makes a missing host path as a *directory* (the slide's warning:
            # a file that is not there becomes a directory named like it). --mount refuses.
            explain.say("overlay", f"mkdir -p {m.source}", "-v: a missing host path is made as a directory")
            os.makedirs(m.source)
        return MountPoint("bind", m.source, m.target, m.read_only)
    volume = volumes.create(m.source) if m.source else volumes.create_anonymous()
    explain.say("overlay", f"volume {volume.name[:12]}: {volume.data}",
                "named" if m.source else "anonymous: a new name of 64 hex digits")
    if volumes.fill_from_image(volume, path_in_rootfs(c.rootfs, m.target)):
        explain.say("overlay", f"cp -a <rootfs>{m.target}/. {volume.data}",
                    "first use of an empty volume: it starts with the image's files")
    return MountPoint("volume", volume.data, m.target, m.read_only, name=volume.name)


def _mounts_of_container(name, mode):
    """The volumes and bind mounts of another container (``--volumes-from NAME[:mode]``)."""
    from labtool.engine import containers

    points = []
    for entry in containers.find(name).mounts:
        if entry["Type"] in ("bind", "volume"):
            read_only = mode == "ro" or (mode == "" and not entry["RW"])
            points.append(MountPoint(entry["Type"], entry["Source"], entry["Destination"], read_only,
                                     entry.get("Name", "")))
    return points


def _record(c, points):
    import json

    tmp = os.path.join(c.dir, "mounts.json.tmp")
    with open(tmp, "w") as f:
        json.dump([p.record() for p in points], f, indent=1)
    os.replace(tmp, os.path.join(c.dir, "mounts.json"))


def path_in_rootfs(rootfs, path):
    """The host path of ``path`` as the container will see it: symlinks in the image are
    followed as if ``rootfs`` were already /, so that an image with ``/data -> /etc`` can
    never make labtool mount onto the host's /etc (the bug runc's "securejoin" prevents)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved, hops = rootfs, 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = os.path.dirname(resolved) if resolved != rootfs else rootfs
            continue
        candidate = os.path.join(resolved, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:      # as the kernel gives up with ELOOP
                raise UsageError(f"too many levels of symbolic links in {path}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = rootfs
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
        else:
            resolved = candidate
    return resolved


# --- part 4: the mounts ------------------------------------------------------------------

def _show(target, rootfs):
    return "<rootfs>" + target[len(rootfs):] if target.startswith(rootfs) else target


def make_mountpoint(target, for_file, shown=""):
    """A file to bind a file onto, a directory for anything else (made if missing)."""
    if os.path.lexists(target):
        if for_file and os.path.isdir(target):
            raise UsageError(f"cannot mount a file onto the directory {shown or target}")
        if not for_file and not os.path.isdir(target):
            raise UsageError(f"cannot mount a directory onto the file {shown or target}")
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if for_file:
        open(target, "a").close()
    else:
        os.mkdir(target)


def bind(source, target, read_only=False, why=""):
    """``mount --rbind SOURCE TARGET``, then read-only if asked."""
    explain.say("overlay", f"mount --bind {source} {why or target}", "the same files, seen at a second place")
    # MS_BIND: no new filesystem, the existing one at a second place (man 8 mount, "Bind mount")
    # MS_REC: mounts below SOURCE come along too (Docker binds with "rbind" as well)
    syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
    if read_only:
        make_read_only(target, why)


def make_read_only(target, why=""):
    """``mount -o remount,bind,ro TARGET``: this one mount refuses writes (EROFS).

    A bind cannot be made read-only in the same mount(2) call that makes it: the kernel
    ignores MS_RDONLY next to MS_BIND, so it takes a second call (man 2 mount,
    "Creating a bind mount" and "Remounting an existing mount").
    """
    explain.say("overlay", f"mount -o remount,bind,ro {why or target}",
                "MS_REMOUNT|MS_BIND|MS_RDONLY: read-only here; the source stays as it was")
    # MS_REMOUNT: change an existing mount; MS_BIND with it: its per-mount flags only, not
    # the filesystem behind it (which stays writable through its other mounts).
    # The call sets all per-mount flags at once: keep nosuid, nodev, noexec if the mount
    # had them (statvfs's ST_ flags have the same values as the MS_ ones).
    kept = os.statvfs(target).f_flag & (syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    syscalls.mount(None, target, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY | kept)


def mount_tmpfs(target, options, why=""):
    """``mount -t tmpfs -o OPTIONS tmpfs TARGET``: a filesystem in memory (man 5 tmpfs)."""
    # Docker's defaults for --tmpfs: no set-user-ID programs, no device files, no programs
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    data = []
    for option in options:
        key = option.partition("=")[0]
        if key in TMPFS_FLAGS:
            flags |= TMPFS_FLAGS[key]
        elif key in TMPFS_UNFLAGS:
            flags &= ~TMPFS_FLAGS[TMPFS_UNFLAGS[key]]
        else:
            data.append(option)
    explain.say("overlay", f"mount -t tmpfs -o {','.join(options) or 'defaults'} tmpfs {why or target}",
                "in memory: writable even under --read-only, gone with the container")
    syscalls.mount("tmpfs", target, "tmpfs", flags, ",".join(data) or None)


def read_only_root(rootfs):
    """``--read-only``: bind the root onto itself, then make that mount read-only.

    MS_REC brings the mounts already inside (/proc, /dev, volumes) along; the remount
    changes the top mount only, so they keep their own flags (/dev/shm stays writable).
    """
    explain.say("overlay", "mount --rbind <rootfs> <rootfs>", "--read-only: a mount of the root's own to remount")
    syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
    make_read_only(rootfs, "<rootfs>")


def mount_all(c):
    """Make every MountPoint of the container, then the read-only root if asked."""
    for p in c.mounts:
        target = path_in_rootfs(c.rootfs, p.destination)
        shown = _show(target, c.rootfs)
        make_mountpoint(target, p.type == "bind" and not os.path.isdir(p.source), p.destination)
        if p.type == "tmpfs":
            mount_tmpfs(target, p.options, shown)
        else:
            bind(p.source, target, p.read_only, shown)
    if c.spec.read_only:
        read_only_root(c.rootfs)


def _from_host(c):
    """With a new user namespace, mounts are made on the host side so their flags lock."""
    return c.namespaces.get("user", 0) is None


# --- the step's work, as overlay.py calls it ----------------------------------------------

def prepare(c):
    """Host side: plan the mounts (making volumes and missing host directories); with
    ``--userns``, make them here already, before the container's namespaces exist."""
    c.mounts = plan(c)
    if _from_host(c) and (c.mounts or c.spec.read_only):
        explain.say("overlay", "--userns: mounts made before the user namespace",
                    "flags of mounts from a more privileged namespace are locked (mount_namespaces(7))")
        mount_all(c)


def before_pivot_root(c):
    """In the child, in its own mount namespace, before pivot_root (see ``rootfs.in_child``)."""
    if not _from_host(c):
        mount_all(c)
