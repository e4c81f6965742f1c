"""``labtool info``: what this machine gives labtool, like the first lines of ``docker info``.

    Storage Driver: overlay        or vfs, and why (no overlayfs, LABTOOL_STORAGE=vfs)
    Cgroup Version: v1 (hybrid)    read from /proc/self/mountinfo (see ``cgroup_version``)
    Kernel Version, Labtool Root Dir, and how many containers, images, volumes there are
"""

import os

from labtool import paths


def cgroup_version():
    """v2, v1, or v1 hybrid, read from the mount table (see ``labtool.cgroups.layout``)."""
    from labtool import cgroups

    return {"v2": "v2", "hybrid": "v1 (hybrid)", "v1": "v1", "none": "none"}[cgroups.layout()]


def cgroup_driver():
    """cgroupfs (labtool makes the directories) or systemd (a delegated scope per container)."""
    from labtool import cgroups
    from labtool.errors import LabtoolError

    try:
        return cgroups.driver()[0]
    except LabtoolError as e:
        return f"none ({e})"


def storage_driver():
    """The driver the next container gets, and why when it is not overlay."""
    if os.environ.get("LABTOOL_STORAGE") == "vfs":
        return "vfs", "LABTOOL_STORAGE=vfs"
    with open("/proc/filesystems") as f:
        if any(line.split()[-1:] == ["overlay"] for line in f):
            return "overlay", ""
    return "overlay", "overlay is not in /proc/filesystems: vfs if the kernel module cannot be loaded"


def info():
    """(label, value) pairs, in docker info's order; an indented label is a detail."""
    from labtool import volumes
    from labtool.engine import containers
    from labtool.images import store

    records = containers.all_records()
    running = sum(1 for r in records if r.running_pid)
    driver, why = storage_driver()
    return [
        ("Containers", len(records)),
        (" Running", running),
        (" Stopped", len(records) - running),
        ("Images", len(store.list_images())),
        ("Volumes", len(volumes.all_volumes())),
        ("Storage Driver", driver),
        *([(" Why", why)] if why else []),
        ("Cgroup Version", cgroup_version()),
        ("Cgroup Driver", cgroup_driver()),
        ("Kernel Version", os.uname().release),
        ("Labtool Root Dir", paths.lib_dir()),
        ("Labtool Daemon", daemon_status()),
    ]


def daemon_status():
    """Whether this root's labtool daemon runs (engine/daemon.py), and who ran this command."""
    from labtool.engine import daemon

    pid = daemon.running_pid()
    state = f"running, pid {pid}" if pid else "not running"
    if daemon.IN_WORKER:
        return state + "; this command ran in a worker forked from it"
    if os.environ.get("LABTOOL_DAEMON") == "0":
        return state + "; LABTOOL_DAEMON=0: this command ran in-process"
    return state + "; this command ran in-process"
