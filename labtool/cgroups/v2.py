"""cgroup v2: one tree for every controller (Documentation/admin-guide/cgroup-v2.rst).

On a v2 machine a container has a single directory::

    /sys/fs/cgroup/labtool/<id>/memory.max, cpu.weight, cpu.max, pids.max, ...

Three rules differ from v1 and are easy to trip over:

- A controller works in a directory only if the parent lists it in
  ``cgroup.subtree_control`` ("+memory +cpu ..."): labtool enables them in the root and
  in ``labtool/`` before making a container's cgroup.
- "No internal processes": a cgroup that hands controllers to its children holds no
  processes itself. ``labtool/`` only ever holds directories.
- There are no ``devices.*`` files: access to device files is decided by a BPF program
  attached to the cgroup (``bpf.py``), as runc and crun do.

The same names as v1 often mean other units: ``cpu.weight`` goes 1..10000 (default
100) where ``cpu.shares`` went 2..262144 (default 1024); ``cpu.max`` is "QUOTA PERIOD"
in one file; ``memory.swap.max`` is swap alone, not memory plus swap.

This is the *cgroupfs* driver: labtool makes ``labtool/`` at the top of the tree itself.
That is right where nothing else manages the tree (the ``make test-vm`` guest without
systemd, a container). Where systemd is PID 1 the tree is systemd's and ``systemd.py`` asks it
for a delegated scope instead; ``LABTOOL_CGROUP_DRIVER=cgroupfs`` still picks this driver
there (systemd leaves alone a top-level directory it did not make, as docker's cgroupfs
driver relies on, but that breaks systemd's single-writer rule).
"""

import os

from labtool.cgroups import PARENT, kill_all, make_dir, read, remove_dir, write

WANTED = ("cpu", "cpuset", "memory", "pids", "io")


def shares_to_weight(shares):
    """cpu.shares (2..262144) -> cpu.weight (1..10000), the way runc converts them."""
    return 1 + ((shares - 2) * 9999) // 262142


class Tree:
    """The unified hierarchy mounted at ``mount`` (``/sys/fs/cgroup`` on a v2 machine).

    ``attach_devices(directory, rules)`` puts the device rules in force; it is
    ``bpf.attach`` on a real machine (a test on a scratch directory passes its own).
    """

    version = "v2"
    driver = "cgroupfs"

    def __init__(self, mount, attach_devices=None):
        self.mount = mount
        self.attach_devices = attach_devices

    def cgroup(self, container_id):
        return Cgroup(self, container_id)

    def check(self):
        """Nothing to check before the child is forked (see ``systemd.Tree.check``)."""

    def parent_dir(self):
        return os.path.join(self.mount, PARENT)

    def enable_controllers(self, directory):
        """Hand our controllers down from ``directory`` to its children."""
        available = read(os.path.join(directory, "cgroup.controllers")).split()
        enabled = read(os.path.join(directory, "cgroup.subtree_control")).split()
        missing = [name for name in WANTED if name in available and name not in enabled]
        if missing:
            write(os.path.join(directory, "cgroup.subtree_control"), " ".join("+" + n for n in missing),
                  "let the children of this cgroup use these controllers")


class Cgroup:
    """One container's cgroup: one directory in the unified tree."""

    def __init__(self, tree, container_id):
        self.tree = tree
        self.id = container_id
        self.dir = os.path.join(tree.parent_dir(), container_id)

    def path(self, filename):
        return os.path.join(self.dir, filename)

    def exists(self):
        return os.path.isdir(self.dir)

    # --- making it ------------------------------------------------------------------------

    def create(self, pid=None, res=None):
        """mkdir: the parent first, with its controllers handed down. (``pid`` and ``res``
        are for the systemd driver, which makes a cgroup around a process, with its limits.)"""
        parent = self.tree.parent_dir()
        self.tree.enable_controllers(self.tree.mount)
        if not os.path.isdir(parent):
            try:
                make_dir(parent, "the parent of all labtool containers; it never holds a process")
            except FileExistsError:
                pass
        self.tree.enable_controllers(parent)
        make_dir(self.dir, "the container's cgroup")

    def apply(self, res, rules):
        """Write the container's limits (``res``: spec.Resources) and device rules (None:
        attach no device program, for --privileged)."""
        if res.memory:
            write(self.path("memory.max"), res.memory, "--memory: above this the kernel reclaims, then OOM-kills")
            swap = (res.memory_swap or 2 * res.memory) - res.memory if res.memory_swap != -1 else "max"
            if os.path.exists(self.path("memory.swap.max")):
                write(self.path("memory.swap.max"), swap, "--memory-swap minus --memory: swap alone")
        if res.cpu_shares:
            write(self.path("cpu.weight"), shares_to_weight(res.cpu_shares),
                  f"--cpu-shares {res.cpu_shares} on v2's scale (default 100)")
        if res.cpus:
            period = 100000
            write(self.path("cpu.max"), f"{int(res.cpus * period)} {period}",
                  f"--cpus {res.cpus}: CPU time per 100 ms period")
        if res.cpuset_cpus:
            write(self.path("cpuset.cpus"), res.cpuset_cpus, "--cpuset-cpus: only these CPUs")
        if res.pids_limit and res.pids_limit > 0:
            write(self.path("pids.max"), res.pids_limit, "--pids-limit: fork fails beyond this")
        if rules is None:           # --privileged (step 07): no program, no device is refused
            return
        attach = self.tree.attach_devices
        if attach is None:
            from labtool.cgroups import bpf
            attach = bpf.attach
        fd = attach(self.dir, rules)
        if isinstance(fd, int) and fd >= 0:
            os.close(fd)                # the attachment keeps the program alive

    def add(self, pid):
        write(self.path("cgroup.procs"), pid, "the child, and all it forks, live here")

    # --- reading it -----------------------------------------------------------------------

    def pids(self):
        try:
            return [int(p) for p in read(self.path("cgroup.procs")).split()]
        except OSError:
            return []

    def oom_kills(self):
        """How many processes the OOM killer ended in here (``oom_kill`` in memory.events)."""
        return _keyed(read(self.path("memory.events"))).get("oom_kill", 0)

    def stats(self):
        """Raw numbers for ``labtool stats``."""
        limit = read(self.path("memory.max"))
        read_bytes = written = 0
        if os.path.exists(self.path("io.stat")):
            for line in read(self.path("io.stat")).splitlines():
                fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
                read_bytes += int(fields.get("rbytes", 0))
                written += int(fields.get("wbytes", 0))
        return {
            "cpu_ns": _keyed(read(self.path("cpu.stat"))).get("usage_usec", 0) * 1000,
            "memory": int(read(self.path("memory.current"))),
            "inactive_file": _keyed(read(self.path("memory.stat"))).get("inactive_file", 0),
            "limit": -1 if limit == "max" else int(limit),
            "pids": int(read(self.path("pids.current"))),
            "block_read": read_bytes,
            "block_written": written,
        }

    # --- pausing, removing ----------------------------------------------------------------

    def freeze(self, frozen=True):
        write(self.path("cgroup.freeze"), 1 if frozen else 0,
              "stop (or resume) every process in the cgroup")

    def remove(self):
        """Kill anything still inside, then rmdir; the last container removes ``labtool/``."""
        if self.pids() and os.path.exists(self.path("cgroup.kill")):
            write(self.path("cgroup.kill"), 1, "SIGKILL to every process left in the cgroup")
        kill_all(self.pids)
        remove_dir(self.dir)
        try:
            os.rmdir(self.tree.parent_dir())
        except OSError:
            pass


def _keyed(text):
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            result[key] = int(value)
    return result
