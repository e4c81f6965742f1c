"""How much does a detached, idle container cost? Start time, and the memory of its supervisor.

Starts ``--count`` containers (default 100) one after another with

    labtool run -d busybox sleep 3600

(``python -m labtool``, with the venv interpreter that ``make lab`` installs when it exists),
and reports:

    start      the total wall time for all of them, and per container the median, p10, p90
               and max (from our fork of ``labtool run -d`` to its exit: the container runs
               by then, ``run -d`` waits for the command's execve)
    memory     per supervisor process (``SupervisorPid`` in the container's state.json, the
               process that owns the container's stdio, log and exit code) its PSS, from
               /proc/PID/smaps_rollup, median and max, and its RSS beside it; the same for
               the containers' own PID 1 (busybox ``sleep``) for comparison

PSS (proportional set size) charges each page shared by n processes 1/n to each: it is the
number that adds up across processes, while RSS counts every shared page in full in every
process (the interpreter's code and its modules, mostly). The target of issue 6 is an idle
supervisor of at most 3 MB PSS.

Then it removes them all (``labtool rm -f`` with every id, timed) and checks that nothing is
left: no container directory, no process, no cgroup directory named after a container id,
nothing mounted under the temporary directory. Everything happens under a temporary
LABTOOL_ROOT that is removed at the end; the host's /var/lib/labtool is never touched.

By default labtool's daemon (``engine/daemon.py``) runs the commands, and each supervisor is
a fork of it (pages shared copy-on-write); with ``LABTOOL_DAEMON=0`` in the environment every
command is a process of its own: run it both ways to compare. The daemon this starts for the
temporary root is stopped at the end.

Needs: root, Python 3.10+ (stdlib only), busybox-static (for labtool's busybox image).

    sudo python bench/scale.py [--count N] [--quick]
    sudo LABTOOL_DAEMON=0 python bench/scale.py
"""

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# the same helpers as the start-up benchmark next to this file
from startup import labtool_version, mounts_under  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = "/opt/labtool/venv/bin/python"
UNSET_FOR_LABTOOL = ("PYTHONDONTWRITEBYTECODE",)     # as in startup.py: keep compiled bytecode
TARGET_PSS_KB = 3 * 1024                              # issue 6: an idle supervisor, at most 3 MB PSS


class Failed(Exception):
    """A command did not do what it should: the numbers would mean nothing."""


def cgroup_dirs_of(ids):
    """Cgroup directories anywhere under /sys/fs/cgroup whose name is one of the container ids."""
    wanted = set(ids)
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if d in wanted:
                found.append(os.path.join(top, d))
    return found


def memory_kb(pid):
    """{"Pss": kB, "Rss": kB, ...} of a process, from /proc/PID/smaps_rollup."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                values[parts[0].rstrip(":")] = int(parts[1])
    return values


def start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def alive(pid, started=None):
    """The process exists, is not a zombie, and (if ``started`` is given) is the same one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and (started is None or int(fields[19]) == started)


def stats(values):
    """median, p10, p90, max of a list of numbers."""
    if len(values) < 2:
        return values[0], values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[0], deciles[8], max(values)


class Labtool:
    """``python -m labtool ...`` of this checkout, in our temporary root."""

    def __init__(self, python, root, pycache):
        self.python, self.root = python, root
        self.env = dict(os.environ, LABTOOL_ROOT=root, PYTHONPATH=REPO)
        for k in UNSET_FOR_LABTOOL:
            self.env.pop(k, None)
        self.env["PYTHONPYCACHEPREFIX"] = pycache

    def argv(self, *args):
        return [self.python, "-m", "labtool", *args]

    def run(self, *args, timeout=120):
        """Run a labtool command; (seconds it took, CompletedProcess)."""
        began = time.perf_counter()
        p = subprocess.run(self.argv(*args), env=self.env, cwd=REPO, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        return time.perf_counter() - began, p

    def shown(self, *args):
        unset = "".join(f"-u {k} " for k in UNSET_FOR_LABTOOL if k in os.environ)
        env = " ".join(f"{k}={shlex.quote(self.env[k])}" for k in ("LABTOOL_ROOT", "PYTHONPATH", "PYTHONPYCACHEPREFIX"))
        extra = " LABTOOL_DAEMON=" + shlex.quote(os.environ["LABTOOL_DAEMON"]) if "LABTOOL_DAEMON" in os.environ else ""
        return f"(cd {shlex.quote(REPO)} && env {unset}{env}{extra} {shlex.join(self.argv(*args))})"

    def container_dir(self, cid):
        return os.path.join(self.root, "lib", "containers", cid)

    def state(self, cid):
        with open(os.path.join(self.container_dir(cid), "state.json")) as f:
            return json.load(f)

    def daemon_pid(self):
        """The pid of a labtool daemon serving our root, if this labtool has one and it runs."""
        try:
            with open(os.path.join(self.root, "run", "labtoold.pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return 0
        return pid if alive(pid) else 0


def start_all(lt, count):
    """Start ``count`` idle containers; their ids and the seconds each ``run -d`` took."""
    ids, times = [], []
    for i in range(count):
        took, p = lt.run("run", "-d", "busybox", "sleep", "3600")
        if p.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", p.stdout.strip()):
            raise Failed(f"container {i + 1}: labtool run -d exited {p.returncode}: {p.stderr.strip()}")
        ids.append(p.stdout.strip())
        times.append(took)
        print(f"\r  started {i + 1}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return ids, times


def measure_memory(lt, ids):
    """Per container: (supervisor pid, its smaps_rollup, PID 1's pid, its smaps_rollup)."""
    found = []
    for cid in ids:
        state = lt.state(cid)
        sup, pid = state.get("SupervisorPid", 0), state.get("Pid", 0)
        if state.get("Status") != "running" or not alive(sup, state.get("SupervisorStartTime")) \
                or not alive(pid, state.get("PidStartTime")):
            raise Failed(f"container {cid[:12]} is not running with its supervisor: {state}")
        found.append((sup, memory_kb(sup), pid, memory_kb(pid)))
    return found


def remove_all(lt, ids):
    """``labtool rm -f`` every id at once; the seconds it took."""
    took, p = lt.run("rm", "-f", *ids, timeout=600)
    if p.returncode != 0:
        raise Failed(f"labtool rm -f exited {p.returncode}: {p.stderr.strip()[-500:]}")
    return took


def leftovers(lt, ids, pids, work):
    """What is still there of the containers ``ids`` (and the processes ``pids``)."""
    problems = []
    dirs = [cid[:12] for cid in ids if os.path.exists(lt.container_dir(cid))]
    if dirs:
        problems.append(f"{len(dirs)} container directories: {dirs[:5]}")
    running = [pid for pid, started in pids if alive(pid, started)]
    if running:
        problems.append(f"{len(running)} processes still running: {running[:5]}")
    cgroups = cgroup_dirs_of(ids)
    if cgroups:
        problems.append(f"{len(cgroups)} cgroup directories: {cgroups[:3]}")
    mounted = mounts_under(work)
    if mounted:
        problems.append(f"{len(mounted)} mounts under {work}: {mounted[:3]}")
    return problems


def stop_daemon(lt):
    """A labtool with a daemon (engine/daemon.py) leaves one running for our root: stop it."""
    if not lt.daemon_pid():
        return
    _, p = lt.run("system", "stop-daemon")
    if p.returncode != 0:
        print(f"cleanup: labtool system stop-daemon: {p.stderr.strip()}", file=sys.stderr)


def report_memory(rows):
    def column(index, key):
        return [row[index][key] / 1024 for row in rows]

    print(f"\n{'memory per process (MiB)':<34}{'median':>8}{'p10':>8}{'p90':>8}{'max':>8}{'sum':>9}")
    for label, index, key in (("supervisor PSS", 1, "Pss"), ("supervisor RSS", 1, "Rss"),
                              ("supervisor PSS anon", 1, "Pss_Anon"),
                              ("container PID 1 (sleep) PSS", 3, "Pss"), ("container PID 1 (sleep) RSS", 3, "Rss")):
        values = column(index, key)
        if not all(key in row[index] for row in rows):
            continue
        median, p10, p90, top = stats(values)
        print(f"{label:<34}{median:>8.2f}{p10:>8.2f}{p90:>8.2f}{top:>8.2f}{sum(values):>9.1f}")
    median, _, _, top = stats(column(1, "Pss"))
    verdict = "met" if top * 1024 <= TARGET_PSS_KB else ("met by the median, not the max" if median * 1024 <=
                                                         TARGET_PSS_KB else "NOT met")
    print(f"\ntarget (issue 6): an idle supervisor at most 3 MB PSS ({TARGET_PSS_KB} KiB): {verdict} "
          f"(median {median * 1024:.0f} KiB, max {top * 1024:.0f} KiB)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100, help="containers to start (default 100)")
    p.add_argument("--quick", action="store_true", help="10 containers")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to wait after the last start before reading memory (default 1)")
    a = p.parse_args()
    count = 10 if a.quick else a.count
    if count < 1:
        p.error("--count must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench/scale.py needs root (namespaces, mounts, cgroups): run it with sudo")
    python = VENV_PYTHON if os.access(VENV_PYTHON, os.X_OK) else sys.executable

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
          f"kernel {platform.release()} {platform.machine()}, "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 20} MiB RAM")
    print(f"python:  {python}")
    print(f"labtool: {REPO} at {labtool_version()}")
    print(f"count:   {count} containers, started one after another")

    work = tempfile.mkdtemp(prefix="labtool-scale-")
    root = os.path.join(work, "labtool-root")
    os.makedirs(root)
    os.chmod(work, 0o711)
    lt = Labtool(python, root, os.path.join(work, "pycache"))
    ids, pids, ok = [], [], False
    try:
        took, made = lt.run("run", "--rm", "busybox", "true")
        if made.returncode != 0:
            raise Failed(f"labtool run --rm busybox true: {made.stderr.strip()}")
        print(f"first run (makes the busybox image): {took * 1000:.0f} ms, not counted")
        daemon = lt.daemon_pid()
        print("daemon:  " + (f"a labtool daemon (pid {daemon}) runs the commands; supervisors are forks of it"
                             if daemon else "none: every labtool command is a process of its own "
                             f"(LABTOOL_DAEMON={os.environ.get('LABTOOL_DAEMON', '(unset)')})"))

        began = time.perf_counter()
        ids, times = start_all(lt, count)
        total = time.perf_counter() - began
        median, p10, p90, top = stats([t * 1000 for t in times])
        print(f"\nstart: {count} containers in {total:.2f} s; per `labtool run -d`: median {median:.0f} ms, "
              f"p10 {p10:.0f}, p90 {p90:.0f}, max {top:.0f} ms")

        time.sleep(a.settle)
        rows = measure_memory(lt, ids)
        pids = [(sup, start_time(sup)) for sup, _, _, _ in rows] + [(pid, start_time(pid)) for _, _, pid, _ in rows]
        report_memory(rows)

        removed = remove_all(lt, ids)
        print(f"\nremove: labtool rm -f with all {count} ids: {removed:.2f} s ({removed / count * 1000:.0f} ms per "
              "container)")
        deadline = time.monotonic() + 10        # a supervisor may take a moment to go
        while (problems := leftovers(lt, ids, pids, work)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if problems:
            raise Failed("left behind after rm -f: " + "; ".join(problems))
        print("left behind: nothing (no container directory, process, cgroup or mount)")
        ids = []

        print("\nexact command lines:")
        print(f"  start:  {lt.shown('run', '-d', 'busybox', 'sleep', '3600')}   (x {count})")
        print(f"  memory: grep -E '^(Pss|Rss|Pss_Anon):' /proc/$SUPERVISOR_PID/smaps_rollup   "
              "($SUPERVISOR_PID: SupervisorPid in <root>/lib/containers/<id>/state.json)")
        print(f"  remove: {lt.shown('rm', '-f', '<id>...')}")
        ok = True
    except Failed as e:
        print(f"\nbench/scale.py: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        if ids:                                   # a run that failed half-way: take it all down
            lt.run("rm", "-f", *ids, timeout=600)
            for problem in leftovers(lt, ids, pids, work):
                print(f"cleanup: still there: {problem}", file=sys.stderr)
        stop_daemon(lt)
        lt.run("reset", timeout=120)              # the root's default bridge and chains go too
        time.sleep(0.5)                           # (the last supervisors' teardown may still write)
        still = mounts_under(work)
        if still:
            print(f"cleanup: NOT removing {work}: still mounted: {still}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
