"""The system calls a container runtime needs and Python 3.11 lacks.

Python's ``os`` module has ``chroot``, ``fork`` and ``execve`` but not (before 3.12)
``unshare`` or ``setns``, and never ``mount``, ``pivot_root`` or ``capset``. We call the C
library through ctypes; every wrapper checks the return value and raises ``OSError`` with
the real errno, so a failure reads like any other Python I/O error::

    OSError: [Errno 22] pivot_root('/var/lib/labtool/...', ...): Invalid argument

Man pages: unshare(2), setns(2), mount(2), umount(2), pivot_root(2), sethostname(2),
capget(2), prctl(2).
"""

import ctypes
import os
import signal

_libc = ctypes.CDLL(None, use_errno=True)

# --- constants from <sched.h>: one bit per namespace kind (man 7 namespaces) -------------
CLONE_NEWNS = 0x00020000      # mount namespace ("NS": it was the first one, in 2002)
CLONE_NEWCGROUP = 0x02000000  # cgroup namespace
CLONE_NEWUTS = 0x04000000     # hostname and NIS domain name
CLONE_NEWIPC = 0x08000000     # System V IPC and POSIX message queues
CLONE_NEWUSER = 0x10000000    # user and group ids, capabilities
CLONE_NEWPID = 0x20000000     # process ids
CLONE_NEWNET = 0x40000000     # network devices, addresses, routes, firewall

# --- constants from <sys/mount.h> (man 2 mount) ------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2                # umount2: lazy unmount, detach now, clean up when unused

# --- prctl options (man 2 prctl) ---------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# pivot_root has no glibc wrapper: we call syscall(2) with its number.
_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41, "armv7l": 218, "riscv64": 41}


def _check(result, what):
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(path):
    return os.fsencode(path) if path is not None else None


def unshare(flags):
    """Move the calling process into new namespaces (man 2 unshare).

    With CLONE_NEWPID the caller itself stays where it is: its *next child* becomes
    PID 1 of the new PID namespace.
    """
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd, nstype=0):
    """Join the namespace that the file descriptor ``fd`` refers to (man 2 setns)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({fd}, {nstype:#x})")


def mount(source, target, fstype=None, flags=0, data=None):
    """Attach a filesystem (or a bind, or change propagation) at ``target`` (man 2 mount)."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
           f"mount({source!r}, {target!r}, {fstype!r})")


def umount2(target, flags=0):
    """Detach the filesystem mounted at ``target`` (man 2 umount)."""
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount2({target!r})")


def pivot_root(new_root, put_old):
    """Make ``new_root`` the root of this mount namespace, moving the old root to
    ``put_old`` (man 2 pivot_root). Unlike chroot, this changes the mount tree itself."""
    require_new_namespace("mnt", "pivot_root")
    nr = _PIVOT_ROOT_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)),
           f"pivot_root({new_root!r}, {put_old!r})")


# Safety nets for a lab machine: the namespaces labtool was started in. sethostname()
# there would rename the host, pivot_root() there would move the host's root away.
_HOME = {kind: os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("uts", "mnt")}


def require_new_namespace(kind, what):
    """Refuse ``what`` unless this process has left the ``kind`` namespace it started in."""
    if os.stat(f"/proc/self/ns/{kind}").st_ino == _HOME[kind]:
        raise OSError(1, f"{what} refused: not in a new {kind} namespace (it would change the host)")


def sethostname(name):
    """Set the hostname of the current UTS namespace (man 2 sethostname)."""
    require_new_namespace("uts", "sethostname")
    data = name.encode()
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), f"sethostname({name!r})")


# clone(2) too: os.fork() cannot pass it flags. Raw clone numbers, as for pivot_root.
_CLONE_NR = {"x86_64": 56, "aarch64": 220, "armv7l": 120, "riscv64": 220}
CLONE_PARENT = 0x00008000     # the child's parent is the caller's parent, not the caller


def fork_sibling():
    """Like fork(2), but the child's parent is *our* parent: clone(CLONE_PARENT | SIGCHLD).

    The child is a copy of this process, as after fork, and is waited for by our parent
    (labtool: a detached container is the child of its supervisor although a short-lived
    helper of the supervisor made it). Only for a process with one thread: Python's own
    bookkeeping after os.fork() does not run. Returns the child's pid, 0 in the child.
    """
    nr = _CLONE_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"clone: unknown syscall number on {os.uname().machine}")
    flags, zero = ctypes.c_ulong(CLONE_PARENT | signal.SIGCHLD), ctypes.c_long(0)
    return _check(_libc.syscall(ctypes.c_long(nr), flags, zero, zero, zero, zero), "clone(CLONE_PARENT)")


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0):
    """Process control operations (man 2 prctl)."""
    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return _check(_libc.prctl(ctypes.c_int(option), *args), f"prctl({option})")


def socket(domain, kind, protocol=0):
    """A bare socket file descriptor (man 2 socket), for ioctls on network devices.
    (Python's ``socket`` module would do, but costs 3 ms to import on every start.)"""
    return _check(_libc.socket(ctypes.c_int(domain), ctypes.c_int(kind), ctypes.c_int(protocol)), "socket")


# --- capabilities (man 7 capabilities, man 2 capget) -------------------------------------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid=0):
    """Return (effective, permitted, inheritable) capability masks of ``pid`` (0 = self)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    join = lambda field: getattr(data[0], field) | (getattr(data[1], field) << 32)  # noqa: E731
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective, permitted, inheritable):
    """Set this thread's effective, permitted and inheritable capability masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i, shift in enumerate((0, 32)):
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")
