"""What does a fork cost labtool's container child? Copy-on-write, measured.

After fork(2) parent and child share every memory page, read-only; the first write to a
page by either of them makes the kernel copy it (man 2 fork: "copy-on-write pages").
A Python process writes all over its memory (every object it touches has a reference
count), so a forked Python child copies pages at every step until its execve. This script
measures, on this machine:

    1. what one page costs: writing 2000 pages of a private mapping, plainly, while a
       forked child shares them (a copy each), and after the child is gone (a fault that
       finds the page no longer shared and just makes it writable)
    2. how many pages a child copies before running a single line of its own code, when
       the parent is a bare ``python3``, and when it is warm like a labtool daemon's worker
       (every module loaded, ``pyroute2`` too): the interpreter's after-fork work and the
       ``os.register_at_fork`` hooks of the modules (threading's is the biggest)

The numbers explain why engine/daemon.py rehearses a command in its spare worker and why
runtime._default_signals is written as it is; see the closing note of issues 2 and 6.

    sudo python3 bench/cow.py          (root is not needed; the venv's python is used if there)
"""

import mmap
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = "/opt/labtool/venv/bin/python3"
PAGES = 2000


def faults():
    """Minor page faults of this process so far (man 5 proc: /proc/PID/stat, field 10)."""
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def per_page_cost():
    """(plain, copy, reuse): microseconds per page written."""
    m = mmap.mmap(-1, PAGES * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def write_all(value):
        began = time.perf_counter()
        for i in range(PAGES):
            m[i * 4096] = value
        return (time.perf_counter() - began) / PAGES * 1e6
    write_all(1)                                  # every page exists now
    plain = write_all(2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the child only waits, sharing the pages
        os.read(r, 1)
        os._exit(0)
    copy = write_all(3)
    os.write(w, b"x")
    os.waitpid(pid, 0)
    pid = os.fork()                               # shared again, then the child is gone at once
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    reuse = write_all(4)
    return plain, copy, reuse


CHILD_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
if {warm!r}:
    from labtool.engine import daemon
    daemon._warm_up()
    import pyroute2  # noqa: F401 - the daemon's workers have it
def faults():
    with open("/proc/self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])
r, w = os.pipe()
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        os.write(w, str(faults()).encode())       # the first line the child runs
        os._exit(0)
    os.waitpid(pid, 0)
    print(os.read(r, 32).decode())
"""


def child_faults(python, warm):
    out = subprocess.run([python, "-c", CHILD_PROBE.format(repo=REPO, warm=warm)], capture_output=True,
                         text=True, check=True).stdout.split()
    return statistics.median(int(x) for x in out)


def main():
    python = VENV_PYTHON if os.access(VENV_PYTHON, os.X_OK) else sys.executable
    runs = [per_page_cost() for _ in range(5)]
    plain, copy, reuse = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"one page written ({PAGES} pages, median of 5):")
    print(f"  not shared                 {plain:5.2f} us")
    print(f"  shared with a fork: copy   {copy:5.2f} us")
    print(f"  the fork gone: reuse       {reuse:5.2f} us")
    bare, warm = child_faults(python, False), child_faults(python, True)
    print(f"pages a forked child has copied at its first line ({python}):")
    print(f"  parent a bare python       {bare:5.0f}  (about {bare * copy / 1000:.1f} ms)")
    print(f"  parent a warm labtool      {warm:5.0f}  (about {warm * copy / 1000:.1f} ms)")


if __name__ == "__main__":
    main()
