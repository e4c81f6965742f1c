"""cgroup v2 under systemd: each container in a delegated unit of its own.

On a machine where systemd is PID 1 (``/run/systemd/system`` exists) the cgroup tree is
systemd's. Its document "Control Group APIs and Delegation" (https://systemd.io/CGROUP_DELEGATION/)
states two rules, the kernel's (Documentation/admin-guide/cgroup-v2.rst) and its own:

- **no processes in inner nodes**: a cgroup holds processes or child cgroups, not both
  (the kernel enforces it as soon as controllers are handed down, man 7 cgroups);
- **a single writer per cgroup**: "don't create your own cgroups below the root cgroup";
  ask systemd for a unit with ``Delegate=yes``, and the sub-tree *below* it is yours.

So labtool does what runc's systemd cgroup driver does (``runc --systemd-cgroup``; podman and
crun too): it asks systemd over D-Bus to make a *transient scope* for the container. A scope
is a unit for processes that someone else forked; labtool forks the container's first
process, then calls ``StartTransientUnit`` with its pid (``PIDs=``), and systemd makes the
cgroup, writes the limits it was given as properties, and moves the pid in. busctl(1)
speaks D-Bus from the command line; the call, as ``--explain`` shows it::

    busctl call org.freedesktop.systemd1 /org/freedesktop/systemd1 \\
        org.freedesktop.systemd1.Manager StartTransientUnit 'ssa(sv)a(sa(sv))' \\
        labtool-0123456789ab.scope fail 10 Description s "labtool container 0123456789ab" \\
        Slice s labtool-0123456789ab.slice Delegate b true PIDs au 1 4242 ... \\
        1 labtool-0123456789ab.slice 1 Description s "..."

The signature ``ssa(sv)a(sa(sv))`` reads: the unit's name, the job mode ("fail": refuse
rather than cancel a conflicting job), its properties as (name, typed value) pairs, and
*auxiliary* units made in the same call, each a name with its own properties. The answer is
a job (``o "/org/freedesktop/systemd1/job/85"``); the job runs after the call returns, so
labtool waits until ``/proc/PID/cgroup`` shows the pid in its scope. The result::

    /sys/fs/cgroup/labtool.slice/                         labtool's slice (systemd's)
        labtool-0123456789ab.slice/                       the container's own slice (systemd's)
            labtool-0123456789ab.scope/   memory.max ...  the container: Delegate=yes
                                                          (``systemctl status labtool-0123456789ab.scope``)

Slice names are paths: ``labtool-X.slice`` is a child of ``labtool.slice``. Why a slice per
container, and not the scope straight in ``labtool.slice``? systemd removes a scope's cgroup
a few milliseconds after its last process exits (we measured 6 to 34 ms), and with it
``memory.events``, the only record that the OOM killer struck. The kernel also counts each
OOM kill in every ancestor's ``memory.events``, and a slice stays until it is stopped: so the
container's slice keeps the count until labtool has read it (``labtool inspect``: OOMKilled),
then labtool stops the slice. Because a weight (``cpu.weight``) only counts against
siblings, and a container's siblings are now the other containers' slices, ``--cpu-shares``
goes to the slice (CPUWeight=).

What is whose. ``Delegate=yes`` hands over the sub-tree *below* the scope; the scope's own
attributes stay systemd's: "never write to any of the attributes of a cgroup systemd created
for you". And systemd does write them again: in the test-vm guest (systemd 252) a
``memory.max`` written by hand into a scope was back to ``max`` after ``systemctl
daemon-reload``, and after ``systemctl set-property --runtime SCOPE CPUWeight=50``. So, as
runc does, labtool gives systemd the limits as properties (MemoryMax=, MemorySwapMax=,
CPUQuotaPerSecUSec=, AllowedCPUs=, TasksMax=: systemd.resource-control(5)), and systemd has
written them before it moves the pid in; labtool then writes the same values into the scope's directory, exactly
as the cgroupfs driver does (``v2.Cgroup.apply``), so that the step reads the same with both
drivers, and attaches the device program (``bpf.py``; systemd, given no DeviceAllow=,
attaches none of its own). Same values twice: whichever writes last, the limits hold.
Also: OOMPolicy=continue, so that an OOM kill ends the victim only, as Docker does (systemd
could be told to stop the whole unit); DefaultDependencies=false, so that the scope is not
ordered against shutdown, as runc sets it; CollectMode=inactive-or-failed, so that a scope
that failed is unloaded too.

The end. When the container's last process exits, systemd stops the scope and removes its
cgroup by itself ("garbage collection"); the slice stays. ``remove()`` copes with whatever is
there: KillUnit (SIGKILL to every process still in the scope), StopUnit of the container's
slice (which takes the scope with it, if any), a wait until its directory is gone. When no
other container is in ``labtool.slice``, it stops ``labtool.slice`` instead (and the
container's slice with it), as the cgroupfs driver removes its ``labtool/``: one call, and
nothing is left. A lock file keeps that from racing with a container being started.

Never computing a path from a unit name (the doc's "don't" #5): the scope's directory is read
from ``/proc/PID/cgroup`` once the pid is in, and ``find()`` asks systemd for a unit's
``ControlGroup`` property (``systemctl show``).
"""

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import replace

from labtool import explain, paths
from labtool.cgroups import kill_all, read, remove_dir, short, v2
from labtool.errors import LabtoolError

SLICE = "labtool.slice"
DESTINATION = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
START_SIGNATURE = "ssa(sv)a(sa(sv))"      # name, mode, properties, auxiliary units
LOCK = "/run/lock/labtool-cgroups.lock"   # held while a scope is made, and while labtool.slice is stopped
SYSTEMD_DIR = "/run/systemd/system"       # exists while systemd is PID 1 (sd_booted(3))
UINT64_MAX = (1 << 64) - 1                # "infinity" for a systemd limit
TIMEOUT = 30.0                            # seconds for systemd to run a job (a TCG guest is slow)


def running(systemd_dir=SYSTEMD_DIR):
    """Is systemd PID 1 here? sd_booted(3) checks this very directory."""
    return os.path.isdir(systemd_dir)


def unit_names(container_id):
    """(scope, slice) of a container: named after the first 12 digits of its id, as Docker shows it."""
    short_id = container_id[:12]
    return f"labtool-{short_id}.scope", f"labtool-{short_id}.slice"


# --- what we ask for ------------------------------------------------------------------------

def limit_properties(res):
    """The container's limits as systemd properties [(name, D-Bus type, value)]
    (systemd.resource-control(5); the D-Bus names of time values end in USec)."""
    props = []
    if res.memory:
        props.append(("MemoryMax", "t", res.memory))
        swap = UINT64_MAX if res.memory_swap == -1 else (res.memory_swap or 2 * res.memory) - res.memory
        props.append(("MemorySwapMax", "t", swap))
    if res.cpus:
        period = 100000                               # systemd's default period, as ours: 100 ms
        props.append(("CPUQuotaPerSecUSec", "t", int(res.cpus * period) * (1000000 // period)))
    if res.cpuset_cpus:
        from labtool.cgroups import parse_cpuset
        props.append(("AllowedCPUs", "ay", cpu_mask(parse_cpuset(res.cpuset_cpus))))
    # without --pids-limit: no limit, as with cgroupfs (systemd's default is DefaultTasksMax=,
    # 15% of the pid space: 2305 tasks in the test-vm guest)
    props.append(("TasksMax", "t", res.pids_limit if res.pids_limit and res.pids_limit > 0 else UINT64_MAX))
    return props


def cpu_mask(cpus):
    """AllowedCPUs= on D-Bus: a bit mask as an array of bytes, CPU 0 in bit 0 of byte 0."""
    mask = bytearray(max(cpus) // 8 + 1)
    for cpu in cpus:
        mask[cpu // 8] |= 1 << (cpu % 8)
    return list(mask)


def scope_properties(container_id, pid, res):
    """The properties of the container's scope."""
    scope, slice_ = unit_names(container_id)
    return [
        ("Description", "s", f"labtool container {container_id[:12]}"),
        ("Slice", "s", slice_),
        ("Delegate", "b", True),                      # the sub-tree below is ours
        ("PIDs", "au", [pid]),                        # systemd moves the container's first process in
        ("DefaultDependencies", "b", False),
        ("CollectMode", "s", "inactive-or-failed"),
        ("OOMPolicy", "s", "continue"),               # an OOM kill ends the victim, not the container
    ] + limit_properties(res)


def slice_properties(container_id, res):
    """The properties of the container's slice, made with the scope in the same call."""
    props = [("Description", "s", f"labtool container {container_id[:12]}: keeps its OOM count")]
    if res.cpu_shares:
        props.append(("CPUWeight", "t", v2.shares_to_weight(res.cpu_shares)))
    return props


def leftover_units(run=None):
    """The labtool units systemd has loaded (``labtool reset``): labtool.slice, labtool-*.slice,
    labtool-*.scope."""
    code, out, _ = (run or _run)(["systemctl", "list-units", "--all", "--plain", "--no-legend", "labtool*"])
    names = [line.replace("\u25cf", " ").split()[0] for line in out.splitlines() if line.strip()] if code == 0 else []
    return [n for n in names if n == SLICE or (n.startswith("labtool-") and n.endswith((".scope", ".slice")))]


def busctl_values(props):
    """Properties as busctl writes them: the count, then NAME TYPE VALUE... for each."""
    words = [str(len(props))]
    for name, kind, value in props:
        words += [name, kind]
        if kind == "b":
            words.append("true" if value else "false")
        elif kind.startswith("a"):                    # an array: its length, then its items
            words += [str(len(value))] + [str(v) for v in value]
        else:
            words.append(str(value))
    return words


def start_command(container_id, pid, res):
    """The busctl command line that makes the container's scope (in its slice) with ``pid`` in it."""
    scope, slice_ = unit_names(container_id)
    return (["busctl", "call", *DESTINATION, "StartTransientUnit", START_SIGNATURE, scope, "fail"]
            + busctl_values(scope_properties(container_id, pid, res))
            + ["1", slice_] + busctl_values(slice_properties(container_id, res)))


def manager_command(method, signature, *args):
    return ["busctl", "call", *DESTINATION, method, signature, *[str(a) for a in args]]


def _run(argv):
    """Run a systemd tool; (exit code, stdout, stderr)."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {TIMEOUT:g} s"
    return p.returncode, p.stdout, p.stderr


def _not_loaded(stderr):
    return "not loaded" in stderr or "NoSuchUnit" in stderr


def _wait(condition, timeout=TIMEOUT, interval=0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --- the tree and a container's cgroup ------------------------------------------------------

class Tree(v2.Tree):
    """The unified hierarchy at ``mount``, managed by systemd.

    ``run(argv) -> (code, stdout, stderr)`` runs busctl and systemctl; a test passes a fake,
    and its own ``lock`` file and ``proc`` directory (where ``PID/cgroup`` is read).
    """

    driver = "systemd"

    def __init__(self, mount, attach_devices=None, run=None, lock=LOCK, proc="/proc"):
        super().__init__(mount, attach_devices)
        self.run = run or _run
        self.lock = lock
        self.proc = proc

    def cgroup(self, container_id):
        return Cgroup(self, container_id)

    def check(self):
        """Before the container is forked: is busctl there?"""
        if self.run is _run and not shutil.which("busctl"):
            raise LabtoolError("the systemd cgroup driver needs busctl (it comes with systemd); "
                               "or use LABTOOL_CGROUP_DRIVER=cgroupfs")

    def call(self, method, signature, *args, argv=None, missing_ok=False):
        """One D-Bus method of systemd's manager, through busctl; its answer."""
        argv = argv or manager_command(method, signature, *args)
        explain.say("cgroups", "busctl call …systemd1.Manager " + shlex.join(argv[5:]),
                    _WHY.get(method, "ask systemd over D-Bus"))
        code, out, err = self.run(argv)
        if code != 0:
            if missing_ok and _not_loaded(err):
                return ""
            unit = argv[7] if len(argv) > 7 else ""
            raise LabtoolError(f"systemd refused {method} {unit}: {err.strip() or f'busctl exit {code}'}")
        return out.strip()

    def control_group(self, unit):
        """The unit's cgroup directory, as systemd says (its ControlGroup property), or None."""
        code, out, _ = self.run(["systemctl", "show", "--property=ControlGroup", "--value", unit])
        path = out.strip() if code == 0 else ""
        return os.path.join(self.mount, path.lstrip("/")) if path else None

    def job_pending(self, job):
        code, _, _ = self.run(["busctl", "get-property", DESTINATION[0], job, "org.freedesktop.systemd1.Job", "State"])
        return code == 0

    def stop_unit(self, unit):
        """StopUnit; True if there was such a unit."""
        return self.call("StopUnit", "ss", unit, "replace", missing_ok=True) != ""

    def stop_slice(self, unit=None, own_dir=None, parent_dir=None):
        """Stop a container's slice ``unit`` (its cgroup: ``own_dir``), or labtool.slice when
        nothing else is in it: the last container takes labtool.slice along, as the cgroupfs
        driver removes ``labtool/``. Under the lock, so that no scope is being made meanwhile.
        True once the directory is gone. Without a unit (``labtool reset``): labtool.slice if
        it is empty."""
        with paths.locked(self.lock):
            parent_dir = parent_dir or self.control_group(SLICE)
            try:
                others = [n for n in os.listdir(parent_dir or "/nonexistent")
                          if os.path.isdir(os.path.join(parent_dir, n)) and os.path.join(parent_dir, n) != own_dir]
            except OSError:
                others = []
            if own_dir and others:
                gone = own_dir
            elif parent_dir and not others and os.path.isdir(parent_dir):
                unit, gone = SLICE, parent_dir
            else:
                return own_dir is None or not os.path.isdir(own_dir)
            self.stop_unit(unit)
            return _wait(lambda: not os.path.isdir(gone), timeout=10)


_WHY = {
    "StartTransientUnit": "a scope of its own, Delegate=yes, its limits as properties, the pid in it",
    "KillUnit": "SIGKILL to every process left in the scope",
    "StopUnit": "systemd removes the unit and its cgroup",
}


class Cgroup(v2.Cgroup):
    """One container's cgroup under systemd: the scope's directory in the unified tree."""

    def __init__(self, tree, container_id):
        self.tree = tree
        self.id = container_id
        self.scope, self.slice = unit_names(container_id)
        self.scope_dir = None          # known once the pid is in (or systemd says where)
        self.slice_dir = None

    @property
    def dir(self):
        if self.scope_dir is None:
            raise FileNotFoundError(2, f"the container has no running scope ({self.scope})")
        return self.scope_dir

    def locate(self):
        """Ask systemd where the units are; True if the container's slice (or scope) exists."""
        self.scope_dir = self.tree.control_group(self.scope)
        self.slice_dir = os.path.dirname(self.scope_dir) if self.scope_dir else self.tree.control_group(self.slice)
        return bool(self.slice_dir and os.path.isdir(self.slice_dir))

    def exists(self):
        return self.locate()

    # --- making it ------------------------------------------------------------------------

    def create(self, pid=None, res=None):
        """StartTransientUnit with ``pid`` in it, then wait until systemd has moved it there.
        Needs the pid: a scope is made around a process that exists. If the container's units
        are there already (its last supervisor was killed), they are removed first."""
        if pid is None:
            raise LabtoolError("a systemd scope is made around a process: create(pid, res)")
        res = res or _no_limits()
        for attempt in (1, 2):
            with paths.locked(self.tree.lock):
                try:
                    answer = self.tree.call("StartTransientUnit", START_SIGNATURE,
                                            argv=start_command(self.id, pid, res))
                except LabtoolError as e:
                    if attempt == 2 or "already exists" not in str(e):
                        raise
                    answer = None
                if answer is not None:
                    job = answer.split('"')[1] if '"' in answer else ""
                    self.scope_dir = self._wait_placed(pid, job)
                    break
            self.remove()                     # outside the lock: remove() takes it
        self.slice_dir = os.path.dirname(self.scope_dir)
        explain.say("cgroups", f"cat /proc/{pid}/cgroup: 0::{short(self.scope_dir[len(self.tree.mount):])}",
                    "systemd made the scope and moved the pid in")

    def _wait_placed(self, pid, job):
        """The scope's directory, read from the kernel once systemd has put the pid in it.
        The job runs after busctl returned; if it ends and the pid is not there, it failed."""
        deadline = time.monotonic() + TIMEOUT
        next_look = time.monotonic() + 0.5
        while True:
            path = _cgroup_of(pid, self.tree.proc)
            if path.endswith("/" + self.scope):
                return os.path.join(self.tree.mount, path.lstrip("/"))
            now = time.monotonic()
            done = now > next_look and job and not self.tree.job_pending(job)
            if done and _cgroup_of(pid, self.tree.proc).endswith("/" + self.scope):
                continue                          # it finished just now: take it at the top
            if done or now > deadline:
                raise LabtoolError(f"systemd did not start {self.scope} (systemctl status {self.scope}; "
                                   f"journalctl -u {self.scope}); LABTOOL_CGROUP_DRIVER=cgroupfs avoids systemd")
            if now > next_look:
                next_look = now + 0.5
            time.sleep(0.005)

    def apply(self, res, rules):
        """As the cgroupfs driver (v2.Cgroup.apply), but ``--cpu-shares`` is the slice's: a
        weight counts against siblings, and the scope has none."""
        if res.cpu_shares:
            explain.say("cgroups", f"CPUWeight={v2.shares_to_weight(res.cpu_shares)} on {self.slice}",
                        f"--cpu-shares {res.cpu_shares}: systemd wrote it in the slice's cpu.weight")
        super().apply(replace(res, cpu_shares=0), rules)

    # --- reading it -----------------------------------------------------------------------

    def oom_kills(self):
        """OOM kills, from the *slice's* memory.events: the kernel counts each kill in every
        ancestor too, and the slice is still there when the scope is long gone."""
        if self.slice_dir is None:
            return 0
        return v2._keyed(read(os.path.join(self.slice_dir, "memory.events"))).get("oom_kill", 0)

    # --- removing -------------------------------------------------------------------------

    def remove(self):
        """Kill what is left (KillUnit), stop the container's slice, which takes the scope
        with it (StopUnit; or labtool.slice, when this is the last container), and make sure
        the directories are gone."""
        if self.slice_dir is None and not self.locate():
            return
        if self.scope_dir and self.pids():
            self.tree.call("KillUnit", "ssi", self.scope, "all", 9, missing_ok=True)
        if not self.tree.stop_slice(self.slice, self.slice_dir, os.path.dirname(self.slice_dir)):
            self._remove_by_hand()

    def _remove_by_hand(self):
        """systemd did not remove it (it does not know the unit any more?): do it ourselves."""
        if not os.path.isdir(self.slice_dir):
            return
        for dirpath, _dirs, _files in sorted(os.walk(self.slice_dir), key=lambda w: -w[0].count("/")):
            kill_all(lambda d=dirpath: _pids(d))
            remove_dir(dirpath)


def _cgroup_of(pid, proc="/proc"):
    """The pid's cgroup v2 path, from the kernel ("0::/labtool.slice/...")."""
    try:
        text = read(f"{proc}/{pid}/cgroup")
    except OSError:
        raise LabtoolError(f"process {pid} is gone: systemd cannot put it in a scope") from None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def _pids(directory):
    try:
        return [int(p) for p in read(os.path.join(directory, "cgroup.procs")).split()]
    except OSError:
        return []


def _no_limits():
    from labtool.spec import Resources
    return Resources()
