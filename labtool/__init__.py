"""labtool: Docker under the hood, one kernel feature at a time.

The package mirrors the notebooks (see README.md):

    01-chroot        rootfs.py         a root filesystem: chroot, its escape, pivot_root
    02-namespaces    namespaces.py     PID, UTS, MNT, IPC, NET, USER, cgroup namespaces
    ...              runtime.py        the ordered list of steps: read it as the table of contents

Importing ``labtool`` is cheap on purpose: ``labtool run`` must start fast, so nothing
heavy (matplotlib, ipywidgets, pyroute2) is imported unless a command needs it.
"""

__version__ = "0.1.0"
