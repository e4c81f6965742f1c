"""Step 02: namespaces, so that a process sees its own little world (man 7 namespaces).

A namespace wraps one kind of global resource so that the processes inside see their
own copy of it. Docker gives each container new namespaces of these kinds:

    pid     process ids: the container's first process is PID 1 (man 7 pid_namespaces)
    uts     hostname and domain name (man 7 uts_namespaces)
    mnt     the mount table: mounts inside are invisible outside (man 7 mount_namespaces)
    ipc     System V IPC and POSIX message queues (man 7 ipc_namespaces)
    net     network devices, addresses, routes, firewall (man 7 network_namespaces)
    cgroup  the view of /proc/self/cgroup (man 7 cgroup_namespaces)
    user    user and group ids (man 7 user_namespaces); Docker leaves it off by default

Two system calls do the work: unshare(2) moves the caller into new namespaces, setns(2)
joins an existing one (that is what ``docker exec`` does). ``/proc/PID/ns/KIND`` names
the namespace a process is in: two processes are in the same one when the links match.
"""

import os

from labtool import explain, syscalls

KINDS = {
    "pid": syscalls.CLONE_NEWPID,
    "uts": syscalls.CLONE_NEWUTS,
    "mnt": syscalls.CLONE_NEWNS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "user": syscalls.CLONE_NEWUSER,
}
FLAG_NAMES = {f"CLONE_NEW{'NS' if kind == 'mnt' else kind.upper()}": flag for kind, flag in KINDS.items()}

# What ``docker run`` gives a container unless told otherwise.
DOCKER_DEFAULT = ("pid", "uts", "mnt", "ipc", "net", "cgroup")


def ns_of(pid="self"):
    """Which namespaces a process is in: {"pid": "pid:[4026531836]", ...}."""
    result = {}
    for kind in KINDS:
        try:
            result[kind] = os.readlink(f"/proc/{pid}/ns/{kind}")
        except OSError:
            pass
    return result


def flags_for(kinds):
    flags = 0
    for kind in kinds:
        flags |= KINDS[kind]
    return flags


def fork_into(kinds):
    """Fork a child that lives in new namespaces of the given kinds; return its pid (0 in it).

    The PID namespace is special: unshare(CLONE_NEWPID) does not move the caller, it only
    decides where the caller's *next child* goes, and that child becomes PID 1. So the
    parent unshares PID, forks, and then steps back (setns to its own PID namespace) so
    that its later children land on the host again. The child unshares everything else
    itself, so the parent keeps the host's mounts, hostname and network.
    """
    rest = flags_for(k for k in kinds if k != "pid")
    if "pid" in kinds:
        explain.say("namespaces", "unshare(CLONE_NEWPID)", "the next child will be PID 1 of a new PID namespace")
        syscalls.unshare(syscalls.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        if rest:
            explain.say("namespaces", f"unshare({explain.flag_names(rest, FLAG_NAMES)})",
                        "new namespaces for the child")
            syscalls.unshare(rest)
        return 0
    if "pid" in kinds:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)
        try:
            syscalls.setns(own, syscalls.CLONE_NEWPID)
        finally:
            os.close(own)
    return pid


def join(pid, kinds):
    """Enter the namespaces of process ``pid`` (what ``docker exec`` does, man 2 setns).

    Joining a PID namespace, like creating one, affects only the caller's children.
    The mount namespace goes last: once in it, /proc is the container's.
    """
    fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY) for kind in kinds}
    try:
        for kind in sorted(fds, key=lambda k: k == "mnt"):
            explain.say("namespaces", f"setns(/proc/{pid}/ns/{kind})", f"join the container's {kind} namespace")
            syscalls.setns(fds[kind], KINDS[kind])
    finally:
        for fd in fds.values():
            os.close(fd)


# --- the step, as runtime.py calls it ----------------------------------------------------

def for_spec(spec):
    """The namespaces a container gets (Docker's default set, for now)."""
    return list(DOCKER_DEFAULT)


def in_child(c):
    """Inside the child, in its new namespaces: give it its own hostname."""
    if "uts" in c.namespaces:
        explain.say("namespaces", f"sethostname({c.hostname!r})", "only this UTS namespace sees it")
        syscalls.sethostname(c.hostname)
