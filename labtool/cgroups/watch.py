"""Watching a container's cgroup from the host: the measuring tape of notebook 03.

A cgroup is not only a set of limits, it is also a set of counters. The kernel keeps them
up to date in the same directory as the limits, and anyone on the host may read them::

    what                    cgroup v1                              cgroup v2
    memory in use           memory/.../memory.usage_in_bytes       memory.current
    highest ever            memory/.../memory.max_usage_in_bytes   memory.peak
    OOM kills               memory/.../memory.oom_control          memory.events
    CPU time used (ns)      cpuacct/.../cpuacct.usage              cpu.stat (usage_usec, in us)
    processes now           pids/.../pids.current                  pids.current
    forks refused           pids/.../pids.events ("max N")         pids.events

(man 7 cgroups; the kernel's Documentation/admin-guide/cgroup-v1/memory.rst and
cgroup-v2.rst.) ``labtool stats`` reads them once a second, ``docker stats`` too. This module
reads them as often as every 10 ms, so that a notebook can *plot* a limit at work: memory
growing until the OOM killer strikes, two containers sharing one CPU, a fork bomb held at
its ceiling.

The containers themselves are started the way a learner starts them: ``labtool run`` in a
fresh process (a Jupyter kernel must not fork a container itself, see ``labtool/notebook.py``).
Everything done here, in the caller's process, is reading files and sending signals.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from labtool import cgroups, notebook
from labtool.engine import containers
from labtool.errors import LabtoolError

# Commands for busybox containers that use one resource as hard as they can.
BUSY = ("sh", "-c", "while :; do :; done")              # one CPU, forever
# Memory, at a pace a plot can follow: `tail` keeps the last 10 *lines* of its input, and
# /dev/zero has no newline, so it keeps everything. Fed 1 MiB every ~10 ms, it grows by
# about 60 MiB/s (plain `tail /dev/zero` gets there in a blink: gigabytes per second).
GROW = ("sh", "-c", "while head -c 1m /dev/zero; do sleep 0.01; done | tail")
# A fork bomb: every f starts two more f in the background, for ever. `exec sleep` then
# makes PID 1 a plain sleep, so that the bomb runs in PID 1's children only.
FORK_BOMB = ("sh", "-c", "f() { f | f & }; f; exec sleep 30")


# --- reading one counter ----------------------------------------------------------------------
# ``cgroup`` is what ``cgroups.find(container_id)`` returns: a v1.Cgroup (one directory per
# controller) or a v2.Cgroup (one directory). These small functions hide the difference.

def _file(cgroup, controller, v1_name, v2_name):
    if cgroup.tree.version == "v1":
        return cgroup.path(controller, v1_name)
    return cgroup.path(v2_name)


def memory_usage(cgroup):
    """Bytes of memory the cgroup uses now (page cache included)."""
    return int(cgroups.read(_file(cgroup, "memory", "memory.usage_in_bytes", "memory.current")))


def memory_peak(cgroup):
    """The most it ever used: the kernel keeps that number for us (``memory.peak`` needs 5.19)."""
    path = _file(cgroup, "memory", "memory.max_usage_in_bytes", "memory.peak")
    return int(cgroups.read(path)) if os.path.exists(path) else 0


def cpu_seconds(cgroup):
    """CPU time all processes of the cgroup have used, in seconds."""
    if cgroup.tree.version == "v1":
        return int(cgroups.read(cgroup.path("cpuacct", "cpuacct.usage"))) / 1e9
    for line in cgroups.read(cgroup.path("cpu.stat")).splitlines():        # "usage_usec 1234" ...
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) / 1e6
    return 0.0


def process_count(cgroup):
    """Processes (and threads) in the cgroup now."""
    return int(cgroups.read(_file(cgroup, "pids", "pids.current", "pids.current")))


def forks_refused(cgroup):
    """How many times a fork failed because of ``pids.max`` (the "max" line of pids.events)."""
    for line in cgroups.read(_file(cgroup, "pids", "pids.events", "pids.events")).splitlines():
        key, _, value = line.partition(" ")
        if key == "max":
            return int(value)
    return 0


# --- containers in the background -------------------------------------------------------------

@dataclass
class Running:
    """A container started by ``running``: its name, id, PID 1 (a host pid) and cgroup."""

    name: str
    id: str
    pid: int
    cgroup: object


def _command_started(pid):
    """labtool records PID 1 a moment before its execve: until then it is still Python."""
    try:
        return os.readlink(f"/proc/{pid}/exe") != os.path.realpath(sys.executable)
    except OSError:
        return False


def _labtool(*args, **popen_args):
    env = dict(os.environ)
    env["PYTHONPATH"] = notebook.REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen([sys.executable, "-m", "labtool", *args], env=env, **popen_args)


def _kill(pid):
    """SIGKILL to a container's PID 1, from the host: it always arrives, and the kernel then
    kills every other process of the container's PID namespace."""
    if pid <= 0:                         # never os.kill(0, ...): that is our own process group
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def running(name, *flags, command=("sleep", "30")):
    """``labtool run --rm --name NAME FLAGS busybox COMMAND`` in the background, like
    ``docker run -d``, but for the length of a ``with`` block only::

        with watch.running("heavy", "--cpu-shares", "1024", command=watch.BUSY) as heavy:
            print(heavy.pid, watch.cpu_seconds(heavy.cgroup))

    On the way out, whatever happened in the block, the container is killed and ``labtool
    run`` removes it (--rm): nothing outlives the notebook cell.
    """
    p = _labtool("run", "--rm", "--name", name, *flags, "busybox", *command,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pid = 0
    try:
        deadline = time.monotonic() + 10
        while p.poll() is None and time.monotonic() < deadline:
            try:
                record, pid = containers.find_running(name)
            except LabtoolError:
                pid = 0
            if pid and _command_started(pid):
                break
            time.sleep(0.01)
        cgroup = cgroups.find(record.id) if pid and p.poll() is None else None
        if cgroup is None:
            raise RuntimeError(f"container {name} did not start: "
                               f"{p.stderr.read().decode().strip() if p.poll() is not None else 'timed out'}")
        yield Running(name, record.id, pid, cgroup)
    finally:
        if pid:
            _kill(pid)
        elif p.poll() is None:
            p.kill()                     # it never got as far as a container: stop labtool itself
        p.wait(timeout=10)
        p.stderr.close()


def sample(read, seconds, interval=0.01):
    """Call ``read()`` every ``interval`` seconds for ``seconds``; return (times, values),
    times in seconds from the first reading."""
    times, values = [], []
    start = time.monotonic()
    while True:
        now = time.monotonic() - start
        times.append(now)
        values.append(read())
        if now >= seconds:
            return times, values
        time.sleep(max(0.0, interval - (time.monotonic() - start - now)))


# --- memory: grow until the limit -------------------------------------------------------------

@dataclass
class MemoryRun:
    """What ``memory_run`` saw: usage (bytes) at each time (s), and how it ended."""

    limit: int
    times: list = field(default_factory=list)
    usage: list = field(default_factory=list)
    peak: int = 0
    exit_code: int = None
    oom_killed: bool = False
    oom_time: float = None          # when the sampler first saw the kill (None: no kill)
    stderr: str = ""


def memory_run(limit="32m", command=GROW, interval=0.01, timeout=20):
    """Run ``labtool run --memory LIMIT busybox COMMAND`` and sample its cgroup's memory
    usage every ``interval`` seconds until it exits.

    The container is run *without* --rm, under a name of its own, so that afterwards its
    state can be read the way ``labtool inspect`` reads it (ExitCode, OOMKilled); then
    ``labtool rm`` removes it. The moment of the OOM kill is the first sample at which the
    cgroup's OOM counter is no longer 0; if the cgroup was gone before the sampler saw that,
    it is the moment the container was seen gone (labtool removes the cgroup as soon as
    PID 1 has exited).
    """
    name = "memory-" + secrets.token_hex(3)
    run = MemoryRun(limit=cgroups.parse_bytes(limit, "--memory"))
    p = _labtool("run", "--name", name, "--memory", str(limit), "busybox", *command,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        cgroup = None                    # labtool makes it a few ms after it starts
        while cgroup is None and p.poll() is None and time.monotonic() < deadline:
            try:
                cgroup = cgroups.find(containers.find(name).id)
            except LabtoolError:
                time.sleep(0.002)        # not even the container's config is written yet
        if cgroup is None:
            raise RuntimeError(f"labtool run --memory {limit} failed: {p.communicate(timeout=10)[1].decode().strip()}")
        start = time.monotonic()
        while True:
            now = time.monotonic() - start
            if time.monotonic() > deadline:
                _kill(containers.find(name).running_pid)          # too slow: stop it
                break
            try:
                usage, kills, peak = memory_usage(cgroup), cgroup.oom_kills(), memory_peak(cgroup)
            except OSError:              # the cgroup is gone: the container has ended
                if run.oom_time is None:
                    run.oom_time = now
                break
            run.times.append(now)
            run.usage.append(usage)
            run.peak = max(run.peak, peak, usage)
            if kills and run.oom_time is None:
                run.oom_time = now
            time.sleep(max(0.0, interval - (time.monotonic() - start - now)))
        run.stderr = p.communicate(timeout=10)[1].decode()
        state = containers.find(name).state
        run.exit_code, run.oom_killed = state.get("ExitCode"), state.get("OOMKilled", False)
        if not run.oom_killed:
            run.oom_time = None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
        notebook.labtool("rm", "--force", name, quiet=True)     # like docker rm -f: gone, whatever happened
    return run


# --- CPU: who gets how much -------------------------------------------------------------------

@dataclass
class CpuRace:
    """Cumulative CPU seconds of each container (``used[name]``) at each time (s)."""

    times: list
    used: dict

    def share(self, name):
        """The part of the elapsed time that ``name`` had the CPU: 1.0 is one whole CPU."""
        return (self.used[name][-1] - self.used[name][0]) / (self.times[-1] - self.times[0])


def cpu_race(contenders, seconds=2.0, interval=0.05, command=BUSY):
    """Start one busy container per entry of ``contenders`` ({name: [labtool run flags]}),
    let them compete for ``seconds``, reading each cgroup's CPU time every ``interval``;
    then stop them all."""
    with _all_running(contenders, command) as started:
        def read():
            return [cpu_seconds(c.cgroup) for c in started]
        times, readings = sample(read, seconds, interval)
    used = {c.name: [r[i] for r in readings] for i, c in enumerate(started)}
    return CpuRace(times, used)


@contextmanager
def _all_running(contenders, command):
    with ExitStack() as stack:         # if the second fails to start, the first is stopped too
        yield [stack.enter_context(running(name, *flags, command=command)) for name, flags in contenders.items()]
