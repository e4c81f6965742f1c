"""The exercise checker of the notebooks: one small function per exercise.

Every exercise in a notebook ends with a check cell such as::

    check.rootfs_ready(MY_ROOTFS)

A check judges what the learner's answer *does*, not how it is written: it runs the
rootfs, calls the function, reads the result. It prints a one-line verdict that starts
with "✔" (the answer works) or "✘" (it does not), and on failure raises AssertionError
with a hint for the next try, so that "Run all" stops there and nbval fails on behaviour.

The caller is usually a Jupyter kernel: multi-threaded, with an event loop. A check never
chroots, unshares or mounts in the calling process; whatever needs the kernel's
container machinery runs in a fresh process (``subprocess``, or ``labtool.notebook.python``).

Each notebook adds its checks below, under a comment ``# --- NN-name``.
"""

import inspect
import json
import os
import re
import shutil
import subprocess
import textwrap

from labtool import notebook


def _ok(message):
    print(f"✔ {message}")


def _fail(message, hint):
    print(f"✘ {message}")
    raise AssertionError(f"{message}\nHint: {hint}")


def _chroot_binary():
    return shutil.which("chroot") or "/usr/sbin/chroot"


def _in_chroot(root, *argv, timeout=10):
    """Run ``argv`` chrooted into ``root``, in a fresh process (the chroot(8) command)."""
    return subprocess.run([_chroot_binary(), root, *argv], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/bin:/sbin:/usr/bin:/usr/sbin"})


def _resolve_inside(root, path, hops=40):
    """Follow ``path`` as a process chrooted into ``root`` would: absolute links are
    relative to ``root``. Return (host path it ends at, or None; the last link seen)."""
    parts = [p for p in path.split("/") if p]
    done = []
    last_link = None
    while parts:
        part = parts.pop(0)
        if part == "..":
            done = done[:-1]
            continue
        if part == ".":
            continue
        host = os.path.join(root, *done, part)
        if os.path.islink(host):
            hops -= 1
            if hops < 0:
                return None, last_link
            target = os.readlink(host)
            last_link = (os.path.join("/", *done, part), target)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not os.path.exists(host):
            return None, last_link
        done.append(part)
    return os.path.join(root, *done), last_link


# --- 01-chroot -------------------------------------------------------------------------

def rootfs_ready(path):
    """Exercise "build a root filesystem": ``path`` holds a /bin/sh that runs under chroot."""
    if not isinstance(path, str) or not os.path.isdir(path):
        _fail(f"{path!r} is not a directory",
              "make the directory first (os.makedirs or mkdir -p), then fill it")
    if os.path.realpath(path) == "/":
        _fail("that is the host's own root", "build the rootfs in a directory of its own, like /tmp/my-rootfs")
    if not os.path.lexists(os.path.join(path, "bin", "sh")):
        _fail("there is no bin/sh in your rootfs",
              "copy /bin/busybox to bin/busybox and make a link bin/sh -> busybox "
              "(one link per name in `busybox --list`)")
    found, link = _resolve_inside(path, "/bin/sh")
    if found is None:
        where = f": {link[0]} points to {link[1]!r}" if link else ""
        if link and link[1].startswith(os.path.realpath(path).rstrip("/") + "/"):
            hint = (f"{link[1]} is a path on the host; inside the chroot it does not exist. "
                    "Link to 'busybox' (relative to bin/) instead")
        else:
            hint = "inside the chroot every absolute link target is looked up under the rootfs"
        _fail(f"bin/sh leads nowhere inside your rootfs{where}", hint)
    p = _in_chroot(path, "/bin/sh", "-c", "echo ok")
    if p.returncode != 0 or p.stdout.strip() != "ok":
        message = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no output"]
        _fail(f"chroot {path} /bin/sh failed (exit code {p.returncode}): {message[0]}",
              "bin/sh must be a program that needs nothing outside the rootfs: a static "
              "busybox does, a dynamically linked shell also needs its libraries (see ldd)")
    for program in ("ls", "cat", "ps"):      # exec'd directly: busybox sh would find its own
        p = _in_chroot(path, f"/bin/{program}", "--help")
        if p.returncode == 127:
            _fail(f"/bin/sh runs, but /bin/{program} is not there",
                  "make a link in bin/ for every applet that `busybox --list` prints, not only sh")
    _ok("Your rootfs runs /bin/sh, ls, cat and ps under chroot: correct")


def bash_runs(path):
    """Exercise "a dynamically linked program": /bin/bash of the host runs in the rootfs."""
    host = subprocess.run(["bash", "-c", 'echo "$BASH_VERSION"'], capture_output=True, text=True).stdout.strip()
    if not os.path.lexists(os.path.join(path, "bin", "bash")):
        _fail("there is no bin/bash in your rootfs", f"copy /bin/bash to {path}/bin/bash")
    p = _in_chroot(path, "/bin/bash", "-c", 'echo "$BASH_VERSION"')
    if p.returncode == 0 and p.stdout.strip() == host:
        _ok("bash runs inside your rootfs, with its loader and libraries: correct")
        return
    err = p.stderr.strip()
    missing = re.search(r"error while loading shared libraries: (\S+?):", err)
    if missing:
        _fail(f"bash starts, but the library {missing.group(1)} is missing in the rootfs",
              f"`ldd /bin/bash` shows where {missing.group(1)} lives on the host: copy it to "
              "the same path inside the rootfs (cp --parents keeps the directories)")
    if p.returncode == 127 and "No such file" in err:
        _fail("the kernel cannot start bin/bash: its program interpreter is missing",
              "a dynamically linked program names a loader (the last line of `ldd /bin/bash`, "
              "e.g. /lib64/ld-linux-x86-64.so.2): the kernel looks for it inside the rootfs")
    _fail(f"bash did not run in the rootfs (exit code {p.returncode}): {err or p.stdout.strip()}",
          "check `ldd /bin/bash`: the binary, its loader and every library must be in the rootfs")


# Run in a fresh interpreter by ``pivot_root_holds``: it gives the learner's function a
# mount namespace of its own in which "/" is *shared*, the way it is on a systemd host
# (made private first, so nothing done in there can reach the real host's mounts), then
# calls the function, looks at "/" and tries the chroot escape.
_PIVOT_HARNESS = '''
import json, os
from labtool import rootfs, syscalls
MS_SHARED = 1 << 20
HOST, TARGET = os.stat("/"), os.stat(ROOT)
def same(a, b): return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
def done(**report):
    print("CHECK " + json.dumps(report), flush=True)
    os._exit(0)
def mount_facts():
    try:
        with open("/proc/self/mountinfo") as f:
            rows = [line.split(" - ")[0].split() for line in f]
    except OSError:
        return {}
    return {"root_shared": any(r[4] == "/" and "shared:" in " ".join(r[6:]) for r in rows),
            "new_root_mounted": any(r[4] == ROOT for r in rows), "cwd": os.getcwd()}
syscalls.unshare(syscalls.CLONE_NEWNS)
syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
syscalls.mount(None, "/", None, syscalls.MS_REC | MS_SHARED)
'''

_PIVOT_CALL = '''
try:
    {name}(ROOT)
except OSError as e:
    done(stage="call", errno=e.errno, error=str(e), **mount_facts())
except Exception as e:
    done(stage="call", errno=None, error=f"{{type(e).__name__}}: {{e}}")
is_rootfs, is_host = same(os.stat("/"), TARGET), same(os.stat("/"), HOST)
if not is_rootfs:      # never try the escape (it makes /.escape) anywhere but in the rootfs
    done(stage="done", is_rootfs=is_rootfs, is_host=is_host, escaped=None)
try:
    rootfs.escape()
except OSError as e:
    done(stage="escape", error=str(e), is_rootfs=is_rootfs)
done(stage="done", is_rootfs=is_rootfs, is_host=is_host, escaped=same(os.stat("/"), HOST))
'''


def pivot_root_holds(func, rootfs_path):
    """Exercise "your own pivot_root": after ``func(rootfs_path)`` in a new mount namespace,
    / is the rootfs and the chroot escape (``labtool.rootfs.escape``) stays inside."""
    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def my_pivot_root(new_root): ...")
    source = textwrap.dedent(inspect.getsource(func))
    if re.search(r"\brootfs\.(pivot_root|make_mounts_private)\b", source):
        _fail("your function calls labtool.rootfs", "write the steps yourself with os and syscalls")
    if not isinstance(rootfs_path, str) or os.path.realpath(rootfs_path) == "/":
        _fail(f"{rootfs_path!r} is not a rootfs of its own", "pass the directory of the first exercise, MY_ROOTFS")
    if not os.path.isdir(rootfs_path) or not os.path.lexists(os.path.join(rootfs_path, "bin", "sh")):
        _fail(f"{rootfs_path!r} is not a root filesystem", "do the first exercise (rootfs_ready) first")
    root = os.path.realpath(rootfs_path)
    code = f"ROOT = {root!r}\n" + _PIVOT_HARNESS + source + _PIVOT_CALL.format(name=func.__name__)
    try:
        r = notebook.python(code, quiet=True, timeout=20)
    except subprocess.TimeoutExpired:
        _fail("your function did not return within 20 seconds", "it should make a few system calls and return")
    lines = [line for line in r.out.splitlines() if line.startswith("CHECK ")]
    if not lines:
        detail = (r.err.strip().splitlines() or ["no output"])[-1]
        _fail(f"the test process failed before reporting: {detail}",
              "run your function's steps one by one in python(...) to see which fails")
    report = json.loads(lines[-1][len("CHECK "):])
    if report["stage"] == "call":
        errno = report.get("errno")
        if errno in (16, 22):       # EBUSY, EINVAL
            if report.get("root_shared"):
                hint = ('"/" is a shared mount here (as on systemd hosts): make every mount private '
                        'first, mount(None, "/", None, MS_REC|MS_PRIVATE), before any other mount')
            elif not report.get("new_root_mounted"):
                hint = "the new root must be a mount point: bind it onto itself (MS_BIND|MS_REC)"
            elif report.get("cwd") != root:
                hint = 'chdir into the new root before pivot_root(".", ".")'
            else:
                hint = "see man 2 pivot_root, ERRORS"
            _fail(f"pivot_root refused: {report['error']}", hint)
        _fail(f"your function raised {report['error']}", "see man 2 pivot_root and man 2 mount")
    if report["stage"] == "escape":
        _fail(f"the escape attempt hit an error: {report['error']}",
              "after your function / should be the rootfs, writable, with nothing above it")
    if report["is_host"]:
        _fail("after your function / is still the host's", 'call syscalls.pivot_root(".", ".") inside the new root')
    if not report["is_rootfs"]:
        _fail("after your function / is not the rootfs", 'finish with os.chdir("/") inside the new root')
    if report["escaped"]:
        hint = ("the old root is still attached on top of the new one: detach it with "
                'umount2(".", MNT_DETACH) right after pivot_root')
        if "pivot_root" not in source:
            hint = "a chroot can be left by a root process: use pivot_root, then detach the old root"
        _fail("the chroot escape got out to the host's /", hint)
    _ok("Your pivot_root holds: / is the rootfs and the chroot escape stays inside: correct")
