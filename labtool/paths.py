"""Where labtool keeps its state: plain files and directories, nothing else.

    /var/lib/labtool/images      the image store (an OCI image layout)
    /var/lib/labtool/layers      each image layer unpacked once, read by containers
    /var/lib/labtool/containers  one directory per container: config, state, rootfs, logs
    /var/lib/labtool/volumes     managed volumes, one directory each (``<name>/_data``)
    /run/labtool                 runtime state that must vanish at reboot (locks, pids)

``LABTOOL_ROOT=/some/dir`` moves all of it under ``/some/dir/lib`` and ``/some/dir/run``,
so the tests can work in a temporary root and leave the real one alone.
"""

import contextlib
import fcntl
import os


def lib_dir():
    root = os.environ.get("LABTOOL_ROOT")
    return os.path.join(root, "lib") if root else "/var/lib/labtool"


def run_dir():
    root = os.environ.get("LABTOOL_ROOT")
    return os.path.join(root, "run") if root else "/run/labtool"


def removing_dir():
    """Where a removed container's directory waits for its files to be deleted (runtime.remove)."""
    return os.path.join(lib_dir(), "removing")


def images_dir():
    return os.path.join(lib_dir(), "images")


def layers_dir():
    return os.path.join(lib_dir(), "layers")


def containers_dir():
    return os.path.join(lib_dir(), "containers")


def container_dir(container_id):
    return os.path.join(containers_dir(), container_id)


def volumes_dir():
    return os.path.join(lib_dir(), "volumes")


@contextlib.contextmanager
def locked(path):
    """Hold an exclusive lock (flock(2)) on the file ``path`` against other labtool processes;
    the lock goes with the file descriptor, so a killed holder never leaves it taken."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:                     # the first lock in this directory
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
