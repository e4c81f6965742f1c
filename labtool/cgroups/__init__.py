"""Step 03: control groups, so that a container gets only its share of the machine.

A control group (man 7 cgroups) is a directory in a special filesystem. Put a process
in it (write its pid into ``cgroup.procs``) and the process, with all the children it
will ever have, is counted and limited by the numbers written into the other files of
that directory::

    docker run --memory 64m      ->  memory.limit_in_bytes (v1)  or  memory.max (v2)
    docker run --cpu-shares 512  ->  cpu.shares                  or  cpu.weight
    docker run --cpus 0.5        ->  cpu.cfs_quota_us/period_us  or  cpu.max
    docker run --cpuset-cpus 0   ->  cpuset.cpus                 (both)
    docker run --pids-limit 50   ->  pids.max                    (both)
    docker run --device /dev/x   ->  devices.allow               or  a BPF program

Linux has two versions. cgroup v1 has one tree per controller (``/sys/fs/cgroup/memory``,
``/sys/fs/cgroup/cpu``, ...); cgroup v2 (``Documentation/admin-guide/cgroup-v2.rst``) has
one tree for all of them. Many machines still run a *hybrid*: the controllers on v1 and
an almost empty v2 tree at ``/sys/fs/cgroup/unified``. ``layout()`` tells which one this
machine has by reading ``/proc/self/mountinfo``; ``backend()`` gives an object with the
same small interface for both (``v1.py``, ``v2.py``), so the rest of labtool does not care.

Every container gets a cgroup named after its id under one parent, ``labtool``, as
Docker uses ``docker``; it is removed with the container.

Who makes that cgroup is the *driver* (Docker's ``--exec-opt native.cgroupdriver``, runc's
``--systemd-cgroup``). With ``cgroupfs`` labtool makes the directories itself. On a v2
machine where systemd is PID 1 the tree is systemd's ("Control Group APIs and Delegation",
https://systemd.io/CGROUP_DELEGATION/): there labtool asks systemd for a delegated unit per
container instead (``systemd.py``). ``driver()`` decides; ``LABTOOL_CGROUP_DRIVER=cgroupfs``
or ``=systemd`` forces one.
"""

import os
import re
import signal
import time

from labtool import explain, privileged
from labtool.cgroups import devices
from labtool.errors import LabtoolError, UsageError

PARENT = "labtool"


def mounts(mountinfo="/proc/self/mountinfo"):
    """The cgroup filesystems mounted here: [(mount point, "cgroup" or "cgroup2", super options)]."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((before.split()[4], fstype, options.split(",")))
    return found


def layout(mountinfo="/proc/self/mountinfo", found=None):
    """"v2" (one unified tree), "hybrid" (v1 controllers and a v2 tree beside them),
    "v1", or "none". ``found``: what ``mounts`` returned, if it was read already."""
    kinds = {fstype for _, fstype, _ in (mounts(mountinfo) if found is None else found)}
    if kinds == {"cgroup2"}:
        return "v2"
    if kinds == {"cgroup", "cgroup2"}:
        return "hybrid"
    return "v1" if "cgroup" in kinds else "none"


def describe():
    """One line for ``labtool info`` and the notebook: which cgroups this machine has."""
    return {"v2": "v2 (unified)", "hybrid": "v1 (hybrid: controllers on v1, an empty v2 tree beside)",
            "v1": "v1", "none": "none mounted"}[layout()]


DRIVER_ENV = "LABTOOL_CGROUP_DRIVER"


def driver(kind=None, env=None, systemd_dir=None):
    """("systemd" or "cgroupfs", why): who makes the containers' cgroups on this machine.

    systemd when the layout is v2 and systemd is PID 1 (``/run/systemd/system`` exists, as
    sd_booted(3) checks); cgroupfs otherwise. ``LABTOOL_CGROUP_DRIVER`` forces one."""
    from labtool.cgroups import systemd

    kind = kind or layout()
    env = os.environ if env is None else env
    booted = systemd.running(systemd_dir or systemd.SYSTEMD_DIR)
    forced = env.get(DRIVER_ENV, "")
    if forced == "cgroupfs":
        return "cgroupfs", f"{DRIVER_ENV}=cgroupfs: labtool makes the directories itself"
    if forced == "systemd":
        if kind != "v2":
            raise LabtoolError(f"{DRIVER_ENV}=systemd needs a pure cgroup v2 machine; this one is {describe_kind(kind)}")
        if not booted:
            raise LabtoolError(f"{DRIVER_ENV}=systemd: systemd is not PID 1 here (no /run/systemd/system)")
        return "systemd", f"{DRIVER_ENV}=systemd: a delegated scope per container"
    if forced:
        raise UsageError(f"invalid {DRIVER_ENV} '{forced}': use cgroupfs or systemd")
    if kind != "v2":
        return "cgroupfs", f"cgroup {describe_kind(kind)}: labtool makes a directory in each controller's tree"
    if booted:
        return "systemd", "systemd is PID 1 (/run/systemd/system) and owns the v2 tree: a delegated scope per container"
    return "cgroupfs", "v2 without systemd (no /run/systemd/system): labtool makes /sys/fs/cgroup/labtool itself"


def describe_kind(kind):
    return {"v2": "v2", "hybrid": "v1 (hybrid)", "v1": "v1", "none": "not mounted"}[kind]


def backend():
    """The cgroup interface of this machine: a ``v1.Tree``, a ``v2.Tree`` or, under systemd,
    a ``systemd.Tree``; its ``why`` says why that one."""
    found = mounts()
    kind = layout(found=found)
    name, why = driver(kind)
    if kind in ("v1", "hybrid"):
        from labtool.cgroups import v1
        tree = v1.Tree.from_mounts(found)
    elif kind == "v2":
        mount = [m for m, fstype, _ in found if fstype == "cgroup2"][0]
        if name == "systemd":
            from labtool.cgroups import systemd
            tree = systemd.Tree(mount)
        else:
            from labtool.cgroups import v2
            tree = v2.Tree(mount)
    else:
        raise LabtoolError("no cgroup filesystem is mounted: mount one on /sys/fs/cgroup, or run with --upto namespaces")
    tree.why = why
    return tree


# --- units as Docker spells them ------------------------------------------------------------

def parse_bytes(text, flag):
    """``64m`` -> 67108864: docker's units (b, k, m, g; binary multiples), ``-1`` for unlimited."""
    value = str(text).strip().lower()
    if value == "-1":
        return -1
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, unit = value, "b"
    if value and value[-1] in units:
        number, unit = value[:-1], value[-1]
    elif value.endswith(("kb", "mb", "gb", "tb")):
        number, unit = value[:-2], value[-2]
    try:
        result = int(float(number) * units[unit])
    except ValueError:
        raise UsageError(f"invalid {flag} '{text}': use a number with an optional unit, like 64m or 1g") from None
    if result <= 0:
        raise UsageError(f"invalid {flag} '{text}': must be more than 0")
    return result


def parse_cpuset(text):
    """``0-2,5`` -> {0, 1, 2, 5}, checked against the CPUs this machine has."""
    cpus = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UsageError(f"invalid --cpuset-cpus '{text}': use numbers and ranges, like 0 or 0-1,3") from None
    online = online_cpus()
    if not cpus or not cpus <= online:
        raise UsageError(f"invalid --cpuset-cpus '{text}': this machine has CPUs {format_cpuset(online)}")
    return cpus


def format_cpuset(cpus):
    return ",".join(str(c) for c in sorted(cpus))


def online_cpus():
    with open("/sys/devices/system/cpu/online") as f:
        return parse_list(f.read().strip())


def parse_list(text):
    result = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        result.update(range(int(low), int(high or low) + 1))
    return result


MIN_MEMORY = 6 << 20      # docker refuses less: the runtime itself would not fit


def check(res):
    """Refuse limits Docker refuses, with its reasons (before anything is made)."""
    if res.memory and res.memory < MIN_MEMORY:
        raise UsageError("Minimum memory limit allowed is 6MB")
    if res.memory_swap and res.memory_swap != -1:
        if not res.memory:
            raise UsageError("You should always set the Memory limit when using Memoryswap limit")
        if res.memory_swap < res.memory:
            raise UsageError("Minimum memoryswap limit should be larger than memory limit")
    ncpus = len(online_cpus())
    if res.cpus and not 0.01 <= res.cpus <= ncpus:
        raise UsageError(f"Range of CPUs is from 0.01 to {ncpus}.00, as there are only {ncpus} CPUs available")
    if res.cpu_shares < 0:
        raise UsageError("invalid --cpu-shares: must not be negative")
    if res.cpuset_cpus:
        parse_cpuset(res.cpuset_cpus)


# --- the step, as runtime.py calls it -----------------------------------------------------

def prepare(c):
    """Host side, before the child exists: pick the driver and check what can be checked
    (systemd: is busctl there). Nothing is made yet: under systemd a cgroup is made around a
    process (see ``forked``)."""
    tree = backend()
    explain.say("cgroups", f"driver {tree.driver}", tree.why)
    tree.check()
    c.cgroup = tree.cgroup(c.id)


def forked(c, pid):
    """Host side, right after the fork: make the child's cgroup, write the limits, put the
    child in. Everything it forks from now on is born in there too.

    Why here and not in ``prepare``: under systemd a cgroup is made *around* a process
    (StartTransientUnit with PIDs=, see ``systemd.py``), so it can only exist once the pid
    does. And it costs no time here: the child is busy making its namespaces meanwhile
    (on another CPU), then says "ready". Nothing runs unlimited meanwhile: the child
    blocks on its "go" pipe (``runtime._fork_and_release``) until every step's ``started``
    has returned; only then does it exec the container's command. And with both drivers the
    limits are in force before the pid lands: with cgroupfs labtool does mkdir, writes the
    limits, then the pid into cgroup.procs; with systemd, systemd writes the limits it was
    given as properties, then moves the pid in, and labtool writes the same files after it
    (the pid is in already: no cgroup.procs). The device program (BPF on v2) is attached
    with the limits. If anything fails, the runtime kills the waiting child and ``teardown``
    removes what was made.
    """
    cgroup = c.cgroup
    cgroup.create(pid, c.spec.resources)
    cgroup.apply(c.spec.resources, privileged.device_rules(c, devices.rules_for(c.devices)))
    if joins_itself(c):
        return                                 # the child moves itself in: see ``enter``
    if pid not in cgroup.pids():
        cgroup.add(pid)


def joins_itself(c):
    """Can the child move itself into its cgroup (v1's ``tasks``, see ``v1.Cgroup.add_self``)?
    Not as root of a new user namespace: that root is an unprivileged user on the host."""
    return hasattr(c.cgroup, "add_self") and not (c.namespaces.get("user", 0) is None)


def enter(c):
    """In the child, once the parent made its cgroup, before its cgroup namespace: go in."""
    if c.cgroup is not None and joins_itself(c):
        c.cgroup.add_self()


def teardown(c):
    """Host side, the container is gone: note an OOM kill, then remove the cgroup."""
    cgroup = getattr(c, "cgroup", None)
    if cgroup is None:
        return
    try:
        c.oom_killed = cgroup.oom_kills() > 0
    except OSError:
        pass
    cgroup.remove()


def find(container_id):
    """The cgroup of a container that exists, or None (for ``stats``, ``pause``, ``exec``,
    ``top``, ``rm``). On v2 both drivers' places are looked at: a container made with
    LABTOOL_CGROUP_DRIVER=cgroupfs is found without it, and the other way round."""
    tree = backend()
    trees = [tree]
    if tree.version == "v2":
        from labtool.cgroups import systemd, v2
        if tree.driver == "systemd":
            trees.insert(0, v2.Tree(tree.mount))           # a directory test first: no subprocess
        elif systemd.running():
            trees.append(systemd.Tree(tree.mount))
    for candidate in trees:
        cgroup = candidate.cgroup(container_id)
        if cgroup.exists():
            return cgroup
    return None


def write(path, value, why=""):
    """Write one value into a cgroup file, narrated for --explain."""
    explain.say("cgroups", f"write {value} > {short(path)}", why)
    with open(path, "w") as f:
        f.write(str(value))


def write_each(path, values, why=""):
    """Write several values into one cgroup file, one write(2) each (``devices.allow`` takes
    one rule per write), through one open file."""
    with open(path, "wb", buffering=0) as f:
        for value in values:
            explain.say("cgroups", f"write {value} > {short(path)}", why)
            f.write(str(value).encode())
            why = ""


def read(path):
    with open(path) as f:
        return f.read().strip()


def make_dir(path, why=""):
    explain.say("cgroups", f"mkdir {short(path)}", why)
    os.mkdir(path)


CONTAINER_ID = re.compile(r"[0-9a-f]{64}")   # compiled once, in the daemon, before any fork


def short(path):
    """A path as --explain shows it: a container id cut to its first 12 digits."""
    return CONTAINER_ID.sub(lambda m: m[0][:12], path)


def kill_all(list_pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        pids = list_pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise LabtoolError(f"processes {pids} did not die; the cgroup stays")
        time.sleep(0.01)


def remove_dir(directory, timeout=2.0):
    """rmdir a cgroup; a process just killed may need a moment to leave it (EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
