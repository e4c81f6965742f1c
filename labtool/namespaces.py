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
joins an existing one (that is what ``docker exec`` and ``--ipc container:NAME`` do).
``/proc/PID/ns/KIND`` names the namespace a process is in: two processes share one
when the links are the same.
"""

import os

from labtool import explain, process, syscalls
from labtool.errors import UsageError

KINDS = {
    "user": syscalls.CLONE_NEWUSER,   # first: the other new namespaces then belong to it
    "pid": syscalls.CLONE_NEWPID,
    "uts": syscalls.CLONE_NEWUTS,
    "mnt": syscalls.CLONE_NEWNS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
}
FLAG_NAMES = {f"CLONE_NEW{'NS' if kind == 'mnt' else kind.upper()}": flag for kind, flag in KINDS.items()}

# --userns: uid/gid 0..65535 inside are 100000..165535 outside (like Docker's userns-remap).
USERNS_BASE, USERNS_SIZE = 100000, 65536


def ns_of(pid="self"):
    """Which namespaces a process is in: {"pid": "pid:[4026531836]", ...}."""
    result = {}
    for kind in KINDS:
        try:
            result[kind] = os.readlink(f"/proc/{pid}/ns/{kind}")
        except OSError:
            pass
    return result


def plan(spec, donor_pid):
    """Decide each namespace of a container: {kind: None (a new one) or a path to join}.

    Kinds missing from the result stay the host's. ``donor_pid(name, kind)`` returns the
    pid of the running container whose namespace ``container:NAME`` joins.
    """
    ns = spec.namespaces
    result = {"mnt": None, "cgroup": None}
    # --network: "host" shares the host's stack; "container:NAME" joins another container's;
    # "none", "bridge" or a network's name get a stack of their own (step 05 wires it up)
    net = "host" if ns.net == "host" else ns.net if ns.net.startswith("container:") else "private"
    for kind, mode, allowed in (("net", net, ("private", "host", "container:")),
                                ("pid", ns.pid, ("private", "host", "container:")),
                                ("uts", ns.uts, ("private", "host")),
                                ("ipc", ns.ipc, ("private", "shareable", "host", "container:")),
                                ("user", ns.user, ("private", "host"))):
        if mode.startswith("container:") and "container:" in allowed and mode != "container:":
            result[kind] = f"/proc/{donor_pid(mode.split(':', 1)[1], kind)}/ns/{kind}"
        elif mode not in allowed or mode == "container:":
            if kind == "net":
                raise UsageError(f"invalid --network value '{ns.net}': use none, bridge, host, "
                                 f"container:NAME or a network's name")
            choices = ", ".join(a + "NAME" if a == "container:" else a for a in allowed)
            raise UsageError(f"invalid --{kind} value '{mode}': use {choices}")
        elif mode != "host":
            result[kind] = None
    return result


def fork_into(namespaces, sibling=False):
    """Fork a child that lives in the given namespaces; return its pid (0 in the child).

    ``namespaces`` maps a kind to None (make a new one) or to a /proc/PID/ns path (join).
    ``sibling``: the child's parent is our parent (``syscalls.fork_sibling``).

    The PID namespace is special: neither unshare(CLONE_NEWPID) nor setns moves the
    caller; they decide where the caller's *next child* goes, and a child in a new one is
    its PID 1. So the parent does that part, forks, and steps back into its own PID
    namespace (setns) so that its later children land on the host again. The child
    makes or joins everything else itself, so the parent keeps the host's mounts,
    hostname and network.

    With a new user namespace the order changes: the PID namespace must belong to it
    (or the container could not mount its /proc), so the child makes both, and
    ``settle`` forks PID 1 later, once the parent has written the id maps.
    """
    parent_does_pid = "pid" in namespaces and not _new_userns(namespaces)
    if parent_does_pid:
        _enter("pid", namespaces["pid"], "the next child will be PID 1 of a new PID namespace"
               if namespaces["pid"] is None else "the next child joins that PID namespace")
    pid = -1
    try:
        pid = syscalls.fork_sibling() if sibling else os.fork()
    finally:
        if parent_does_pid and pid != 0:
            _enter("pid", "/proc/self/ns/pid", None)     # step back: our next children are on the host
    if pid == 0:
        # if labtool dies (even by kill -9), so does the container: nothing runs on unseen
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, 9)
        for kind, path in namespaces.items():
            if path is not None and not (kind == "pid" and parent_does_pid):
                _enter(kind, path, f"join {kind} namespace")
        # a new cgroup namespace waits for settle(): it is rooted where the child is when
        # it is made, and the parent moves the child into its cgroup first (step 03)
        new = flags_for(k for k, path in namespaces.items()
                        if path is None and not (k == "pid" and parent_does_pid) and k != "cgroup")
        if new:
            if explain.enabled:
                explain.say("namespaces", f"unshare({explain.flag_names(new, FLAG_NAMES)})",
                            "new namespaces for the child")
            syscalls.unshare(new)
    return pid


def _new_userns(namespaces):
    return "user" in namespaces and namespaces["user"] is None


def _enter(kind, path, why):
    if path is None:
        explain.say("namespaces", f"unshare({explain.flag_names(KINDS[kind], FLAG_NAMES)})", why)
        syscalls.unshare(KINDS[kind])
        return
    if why:
        explain.say("namespaces", f"setns({path})", why)
    fd = os.open(path, os.O_RDONLY)
    try:
        syscalls.setns(fd, KINDS[kind])
    finally:
        os.close(fd)


def flags_for(kinds):
    flags = 0
    for kind in kinds:
        flags |= KINDS[kind]
    return flags


def join(pid, kinds=None):
    """Enter the namespaces of process ``pid`` that differ from ours (``docker exec``).

    Joining a PID namespace, like creating one, affects only the caller's children, so
    callers fork afterwards. The mount namespace goes last: setns into it also moves our
    root and working directory to the container's root.
    """
    kinds = kinds or [k for k in KINDS if k != "pid" and
                      os.readlink(f"/proc/{pid}/ns/{k}") != os.readlink(f"/proc/self/ns/{k}")]
    fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY) for kind in kinds}
    try:
        for kind in sorted(fds, key=lambda k: (k != "user", k == "mnt")):
            explain.say("namespaces", f"setns(/proc/{pid}/ns/{kind})", f"join the container's {kind} namespace")
            syscalls.setns(fds[kind], KINDS[kind])
    finally:
        for fd in fds.values():
            os.close(fd)


def write_id_maps(pid):
    """From the parent: map uid/gid 0.. inside ``pid``'s user namespace to 100000.. outside."""
    line = f"0 {USERNS_BASE} {USERNS_SIZE}\n"
    for name in ("uid_map", "gid_map"):
        explain.say("namespaces", f"write '{line.strip()}' > /proc/{pid}/{name}",
                    "root inside is an unprivileged id outside")
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(line)


def bring_loopback_up():
    """``ip link set lo up`` in a new network namespace, where lo starts down (netdevice(7))."""
    import fcntl
    import struct

    AF_INET, SOCK_DGRAM = 2, 2
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    explain.say("namespaces", "ioctl(SIOCSIFFLAGS, lo, IFF_UP)", "a new network namespace has only lo, and it is down")
    fd = syscalls.socket(AF_INET, SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(fd, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        os.close(fd)


# --- the step, as runtime.py calls it ----------------------------------------------------

def started(c, pid):
    """Host side, once the child exists: map its user ids, if it has a user namespace."""
    if "user" in c.namespaces and c.namespaces["user"] is None:
        write_id_maps(pid)


def settle(c, report_fd):
    """In the child, first thing once the parent is done: settle into the new namespaces.

    Become root of the user namespace (uid 0 inside = 100000 outside), fork PID 1 if the
    user namespace made us wait for it (its host pid goes to the parent on ``report_fd``),
    bring the loopback up, set the hostname.
    """
    if c.namespaces.get("cgroup", 0) is None:
        explain.say("namespaces", "unshare(CLONE_NEWCGROUP)", "now that it is in its cgroup: /proc/self/cgroup shows /")
        syscalls.unshare(syscalls.CLONE_NEWCGROUP)
    if _new_userns(c.namespaces):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        if "pid" in c.namespaces:
            _become_pid_1(report_fd)
    if c.namespaces.get("net", 0) is None:
        bring_loopback_up()
    if c.namespaces.get("uts", 0) is None:
        explain.say("namespaces", f"sethostname({c.hostname!r})", "only this UTS namespace sees it")
        syscalls.sethostname(c.hostname)


def _become_pid_1(report_fd):
    """Fork once more: the child is PID 1; this process stays to pass on its exit code."""
    import signal

    explain.say("namespaces", "fork()", "the first child in the new PID namespace is its PID 1")
    pid = os.fork()
    if pid == 0:
        # if the process above us dies (kill -9), so do we: nothing is left behind
        syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
        return
    os.write(report_fd, str(pid).encode())
    os.closerange(3, 65536)     # report_fd, and our copy of the exec-error pipe (see init.py)
    process.forward_signals(pid)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    os._exit(process.exit_code(status))
