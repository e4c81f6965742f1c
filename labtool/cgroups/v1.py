"""cgroup v1: one tree per controller (man 7 cgroups, "Cgroups version 1").

On a v1 machine each controller is its own filesystem::

    /sys/fs/cgroup/memory/labtool/<id>/memory.limit_in_bytes
    /sys/fs/cgroup/cpu/labtool/<id>/cpu.shares
    /sys/fs/cgroup/pids/labtool/<id>/pids.max
    ...

so one container has one directory in each tree, and its pid is written into each
``cgroup.procs``. The files are described in the kernel's
``Documentation/admin-guide/cgroup-v1/`` (memory.rst, cpusets.rst, devices.rst, pids.rst).
"""

import errno
import itertools
import os
from dataclasses import dataclass

from labtool import explain
from labtool.cgroups import PARENT, kill_all, read, remove_dir, short, write, write_each

# The controllers labtool uses, and what for.
CONTROLLERS = {
    "memory": "--memory, --memory-swap; the OOM count",
    "cpu": "--cpu-shares, --cpus",
    "cpuacct": "CPU time used, for stats",
    "cpuset": "--cpuset-cpus",
    "pids": "--pids-limit",
    "devices": "which device files may be opened",
    "freezer": "pause and unpause",
    "blkio": "bytes read and written, for stats",
}


@dataclass
class Tree:
    """The v1 hierarchies of this machine: {controller: mount point}."""

    mounts: dict

    @classmethod
    def from_mounts(cls, cgroup_mounts):
        found = {}
        for mount_point, fstype, options in cgroup_mounts:
            if fstype == "cgroup":
                for name in options:
                    if name in CONTROLLERS:
                        found[name] = mount_point
        return cls(found)

    version = "v1"
    driver = "cgroupfs"

    def check(self):
        """Nothing to check before the child is forked."""

    def cgroup(self, container_id):
        return Cgroup(self, container_id)

    def parent_dirs(self):
        return {os.path.join(m, PARENT) for m in self.mounts.values()}


class Cgroup:
    """One container's cgroup: a directory named after it in each controller's tree."""

    def __init__(self, tree, container_id):
        self.tree = tree
        self.id = container_id
        self.dirs = {name: os.path.join(mount, PARENT, container_id) for name, mount in tree.mounts.items()}

    def path(self, controller, filename):
        return os.path.join(self.dirs[controller], filename)

    def distinct_dirs(self):
        """Each directory once (``cpu`` and ``cpuacct`` are often one mount, "cpu,cpuacct")."""
        return sorted(set(self.dirs.values()))

    def exists(self):
        return "memory" in self.dirs and os.path.isdir(self.dirs["memory"])

    # --- making it ------------------------------------------------------------------------

    def create(self, pid=None, res=None):
        """mkdir in every controller's tree. (``pid`` and ``res``: for the systemd driver.)

        The parent, ``labtool/``, is shared with every other container on the machine (of any
        labtool root), and the last container to go removes it (``remove``). If that happens
        between our look and our mkdir, a write into it fails with ENODEV (kernfs: the file's
        directory is gone) or the mkdir with ENOENT: then make it again.
        """
        for attempt in range(5):
            try:
                return self._create()
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENODEV) or attempt == 4:
                    raise

    def _create(self):
        dirs = self.distinct_dirs()
        parents = sorted({os.path.dirname(d) for d in dirs if not os.path.isdir(os.path.dirname(d))})
        if parents:
            explain.say("cgroups", f"mkdir {_spell(parents)}", "the parent of all labtool containers, like /docker")
        for parent in parents:
            try:
                os.mkdir(parent)
            except FileExistsError:
                pass                      # another labtool made it a moment ago
        if "cpuset" in self.dirs and os.path.dirname(self.dirs["cpuset"]) in parents:
            _inherit_cpuset(os.path.dirname(self.dirs["cpuset"]))
            # and its children copy its CPUs and memory nodes when they are made (man 7 cgroups)
            write(os.path.join(os.path.dirname(self.dirs["cpuset"]), "cgroup.clone_children"), 1,
                  "every new cgroup below starts with our CPUs and memory nodes")
        explain.say("cgroups", f"mkdir {_spell(dirs)}", "one cgroup of the container's own in each controller's tree")
        for directory in dirs:
            try:
                os.mkdir(directory)
            except FileExistsError:
                pass                      # ours, from an attempt the parent's removal cut short
        if "cpuset" in self.dirs:
            _inherit_cpuset(self.dirs["cpuset"])

    def apply(self, res, rules):
        """Write the container's limits (``res``: spec.Resources) and device rules (None:
        allow every device, for --privileged)."""
        if res.memory:
            write(self.path("memory", "memory.limit_in_bytes"), res.memory,
                  "--memory: above this the kernel reclaims, then OOM-kills")
            swap = res.memory_swap or 2 * res.memory       # docker's default: as much swap as memory
            memsw = self.path("memory", "memory.memsw.limit_in_bytes")
            if swap > 0 and os.path.exists(memsw):
                write(memsw, swap, "--memory-swap: memory plus swap")
        if res.cpu_shares:
            write(self.path("cpu", "cpu.shares"), res.cpu_shares,
                  "--cpu-shares: a weight against other busy cgroups (default 1024)")
        if res.cpus:
            period = 100000
            write(self.path("cpu", "cpu.cfs_period_us"), period, "a scheduling period of 100 ms")
            write(self.path("cpu", "cpu.cfs_quota_us"), int(res.cpus * period),
                  f"--cpus {res.cpus}: this much CPU time per period, over all CPUs")
        if res.cpuset_cpus:
            write(self.path("cpuset", "cpuset.cpus"), res.cpuset_cpus, "--cpuset-cpus: only these CPUs")
        if res.pids_limit and res.pids_limit > 0:
            write(self.path("pids", "pids.max"), res.pids_limit, "--pids-limit: fork fails beyond this")
        if "devices" in self.dirs and rules is None:       # --privileged (step 07): no rules
            write(self.path("devices", "devices.allow"), "a", "--privileged: every device, any access")
        elif "devices" in self.dirs:
            for allow, group in itertools.groupby(rules, key=lambda rule: rule.allow):
                group = list(group)
                write_each(self.path("devices", "devices.allow" if allow else "devices.deny"),
                           [rule.v1_line() for rule in group],
                           "deny every device first" if group[0].type == "a" and not allow else "")

    def add(self, pid):
        explain.say("cgroups", f"write {pid} > {_spell(self.distinct_dirs())}/cgroup.procs",
                    "the child, and all it forks, live here")
        for directory in self.distinct_dirs():
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write(str(pid))

    def add_self(self):
        """From inside a single-threaded process: move it in by writing ``0`` (the caller)
        into each ``tasks`` file.

        Why not ``cgroup.procs``: moving a whole thread group makes the kernel stop every
        fork and exit on the machine for a moment (cgroup_threadgroup_rwsem), and taking
        that lock waits for an RCU grace period: 10 to 20 ms here, longer than the rest of
        a container's start. A thread that moves *itself* needs no such lock (it cannot
        exit or exec meanwhile), and a process of one thread is then wholly inside; its
        children are born there (kernel/cgroup/cgroup.c, cgroup_procs_write_start)."""
        if explain.enabled:
            explain.say("cgroups", f"write 0 > {_spell(self.distinct_dirs())}/tasks",
                        "the child moves itself in (0: the caller); all it forks lives here too")
        for directory in self.distinct_dirs():     # (os.open: in the child, every page counts)
            fd = os.open(directory + "/tasks", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    # --- reading it -----------------------------------------------------------------------

    def pids(self):
        try:
            return [int(p) for p in read(self.path("memory", "cgroup.procs")).split()]
        except OSError:
            return []

    def oom_kills(self):
        """How many processes the OOM killer ended in here (``oom_kill`` in memory.oom_control;
        ``memory.failcnt`` counts hitting the limit, which happens without any kill)."""
        for line in read(self.path("memory", "memory.oom_control")).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def stats(self):
        """Raw numbers for ``labtool stats``."""
        memory_stat = _keyed(read(self.path("memory", "memory.stat")))
        limit = int(read(self.path("memory", "memory.limit_in_bytes")))
        read_bytes = written = 0
        try:
            for line in read(self.path("blkio", "blkio.throttle.io_service_bytes_recursive")).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] == "Read":
                    read_bytes += int(parts[2])
                elif len(parts) == 3 and parts[1] == "Write":
                    written += int(parts[2])
        except (OSError, KeyError):
            pass
        return {
            "cpu_ns": int(read(self.path("cpuacct", "cpuacct.usage"))),
            "memory": int(read(self.path("memory", "memory.usage_in_bytes"))),
            "inactive_file": memory_stat.get("total_inactive_file", 0),
            "limit": limit,
            "pids": int(read(self.path("pids", "pids.current"))),
            "block_read": read_bytes,
            "block_written": written,
        }

    # --- pausing, removing ----------------------------------------------------------------

    def freeze(self, frozen=True):
        write(self.path("freezer", "freezer.state"), "FROZEN" if frozen else "THAWED",
              "the freezer stops (or resumes) every process in the cgroup")

    def remove(self):
        """Kill anything still inside, then rmdir (a cgroup goes away only when empty)."""
        kill_all(self.pids)
        for directory in self.distinct_dirs():
            remove_dir(directory)
        for parent in self.tree.parent_dirs():
            try:
                os.rmdir(parent)          # the last container takes the parent with it
            except OSError:
                pass                      # others still live there


def _spell(dirs):
    """Many directories that differ only in the controller, written once, the shell's way:
    /sys/fs/cgroup/{cpu,memory}/labtool/<id>."""
    if len(dirs) == 1:
        return short(dirs[0])
    tops = [os.path.dirname(d.split("/" + PARENT, 1)[0]) for d in dirs]
    names = [os.path.basename(d.split("/" + PARENT, 1)[0]) for d in dirs]
    rest = dirs[0].split("/" + PARENT, 1)[1]
    if len(set(tops)) != 1:
        return " ".join(short(d) for d in dirs)
    return short(f"{tops[0]}/{{{','.join(names)}}}/{PARENT}{rest}")


def _inherit_cpuset(directory):
    """A new v1 cpuset starts with no CPUs and no memory nodes: copy the parent's."""
    parent = os.path.dirname(directory)
    for name in ("cpuset.cpus", "cpuset.mems"):
        if os.path.isdir(directory) and not read(os.path.join(directory, name)):
            write(os.path.join(directory, name), read(os.path.join(parent, name)),
                  "a new cpuset is empty: start from the parent's")


def _keyed(text):
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            result[key] = int(value)
    return result
