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
import signal
import socket
import subprocess
import sys
import textwrap
import time

from labtool import namespaces, notebook
from labtool.engine import containers
from labtool.errors import LabtoolError


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


# --- 02-namespaces ---------------------------------------------------------------------

def _container_command(command, example):
    """A learner's answer must be a shell command that starts a container with labtool."""
    if not isinstance(command, str) or not command.strip():
        _fail(f"{command!r} is not a shell command", f'write it as a string, like "{example}"')
    if not re.search(r"\blabtool\s+(run|exec)\b", command):
        _fail("your command does not start a container",
              f"the answer is a labtool command, like \"{example}\"")


def _run_answer(command, timeout=20):
    try:
        return notebook.sh(command, quiet=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        _fail(f"your command did not end within {timeout} seconds",
              "the container's command should print something and exit")


class _Background:
    """``labtool run --rm --name NAME FLAGS busybox CMD`` in the background, for one check.

    Used as ``with _Background("postbox", "--ipc", "shareable") as pid:``; ``pid`` is the
    container's PID 1 as the host sees it. On the way out it is killed (SIGKILL from the
    parent PID namespace always reaches a PID 1) and labtool removes the container.
    """

    def __init__(self, name, *flags, command=("sleep", "20"), ready=None):
        self.name, self.flags, self.command, self.ready = name, flags, command, ready
        self.process, self.pid = None, 0

    def __enter__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = notebook.REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "labtool", "run", "--rm", "--name", self.name, *self.flags, "busybox",
             *self.command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.time() + 10
        while time.time() < deadline and self.process.poll() is None:
            try:
                self.pid = containers.find_running(self.name)[1]
            except LabtoolError:
                self.pid = 0
            if self.pid and (self.ready is None or os.path.exists(f"/proc/{self.pid}/root{self.ready}")):
                return self.pid
            time.sleep(0.02)
        self.__exit__()
        raise RuntimeError(f"the check could not start its container {self.name}: "
                           f"{self.process.stderr.read().decode().strip() or 'it did not come up'}")

    def __exit__(self, *_exc):
        if not self.pid and self.process.poll() is None:
            try:
                self.pid = containers.find_running(self.name)[1]
            except LabtoolError:
                pass
        if self.pid and self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


def private_hostname(command):
    """Exercise "make the hostname private": ``command`` runs ``hostname`` in a container
    whose hostname is ``lab``, and the host keeps its own."""
    example = "labtool run --rm ... busybox hostname"
    _container_command(command, example)
    before = socket.gethostname()
    r = _run_answer(command)
    after = socket.gethostname()
    if after != before:
        subprocess.run(["hostname", before], check=False)      # put the host's name back at once
        _fail(f"your command renamed the host to {after!r} (the check has set it back to {before!r})",
              "a process in the host's UTS namespace changed the hostname: give the container a UTS "
              "namespace of its own (labtool's default) and let labtool set the name with --hostname")
    if r.code != 0:
        message = (r.err.strip().splitlines() or [f"exit code {r.code}"])[-1]
        hint = "run it in a cell with sh(...) and read the error"
        if "UTS namespace" in message:
            hint = ("--uts host or --upto chroot share the host's UTS namespace: a hostname set there would "
                    "rename the host, so labtool refuses. Keep the container's own UTS namespace")
        _fail(f"your command failed: {message}", hint)
    lines = r.out.strip().splitlines()
    got = lines[-1] if lines else ""
    if got == "lab":
        _ok("The container calls itself lab, and the host kept its own name: correct")
        return
    if got == before:
        hint = "that is the host's name: the container shares the host's UTS namespace (--uts host?)"
    elif re.fullmatch(r"[0-9a-f]{12}", got):
        hint = "that is labtool's default, the start of the container id: choose the name with --hostname"
    else:
        hint = "the last line your command prints must be the container's hostname, lab"
    _fail(f"the container's hostname came out as {got!r}, not 'lab'", hint)


def pid_one(command):
    """Exercise "your command is PID 1": ``command`` prints the shell's ``$$`` in a container."""
    example = "labtool run --rm busybox sh -c 'echo $$'"
    _container_command(command, example)
    if "$$" not in command:
        _fail("your command does not print $$", f"let the container's shell say its own PID: {example}")
    r = _run_answer(command)
    if r.code != 0:
        message = (r.err.strip().splitlines() or [f"exit code {r.code}"])[-1]
        _fail(f"your command failed: {message}", "run it in a cell with sh(...) and read the error; "
              "mind the quotes: $$ must reach the container's shell, not the notebook's bash")
    got = (r.out.strip().splitlines() or [""])[-1].strip()
    if got == "1":
        _ok("PID 1 inside the container is your shell: correct")
        return
    if got == "2" and "--init" in command:
        hint = "with --init, labtool's init is PID 1 and your shell is its first child: drop --init"
    elif got.isdigit() and "--pid" in command:
        hint = "with --pid host the container shares the host's PID namespace: its shell gets a host PID"
    elif got.isdigit():
        hint = ("that is a PID of the host's namespace: was $$ expanded by the notebook's bash before "
                "labtool ran? Put the container's command in single quotes: sh -c 'echo $$'")
    else:
        hint = "the last line your command prints must be the value of $$ inside the container"
    _fail(f"the shell's PID came out as {got!r}, not 1", hint)


def joins_ipc(command):
    """Exercise "join a container's IPC namespace": with container ``postbox`` running (it
    has a message queue), ``command`` lists the queues of postbox's IPC namespace."""
    example = "labtool run --rm ... busybox ls /dev/mqueue"
    _container_command(command, example)
    if "postbox" not in command:
        _fail("your command does not name the container postbox",
              "the IPC namespace to join is the one of the running container named postbox")
    queue = "letter-" + os.urandom(3).hex()
    try:
        with _Background("postbox", "--ipc", "shareable", ready=f"/dev/mqueue/{queue}",
                         command=("sh", "-c", f"touch /dev/mqueue/{queue}; exec sleep 20")):
            r = _run_answer(command)
    except RuntimeError as e:
        _fail(str(e), "is a container named postbox still running from an earlier try? "
              "labtool reset removes every container")
    if r.code != 0:
        message = (r.err.strip().splitlines() or [f"exit code {r.code}"])[-1]
        hint = "--ipc takes private, shareable, host or container:NAME; run it with sh(...) to see more"
        if "/dev/mqueue" in message and "--ipc host" in command:
            hint = "with --ipc host the container uses the host's IPC namespace, not postbox's"
        _fail(f"your command failed: {message}", hint)
    if queue not in r.out:
        _fail("postbox's queue is not in your command's output",
              "a new container gets a new, empty IPC namespace: ask labtool to join "
              "postbox's one with --ipc container:postbox")
    if re.search(r"\blabtool\s+exec\b", command):
        _ok("You see postbox's queue (labtool exec joins all its namespaces; "
            "--ipc container:postbox would join only the IPC one): correct")
        return
    _ok("Your container sees postbox's message queue: it joined postbox's IPC namespace: correct")


def shared_namespaces(func):
    """Exercise "which namespaces do two processes share": ``func(pid_a, pid_b)`` returns
    the kinds (names such as "net") in which the two processes are in the same namespace."""
    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def shared_namespaces(pid_a, pid_b): ...")
    kinds = list(namespaces.KINDS)

    def truth(a, b):
        mine, theirs = namespaces.ns_of(a), namespaces.ns_of(b)
        return {k for k in kinds if mine.get(k) is not None and mine.get(k) == theirs.get(k)}

    with _Background("check-ns-a", "--ipc", "shareable", command=("sleep", "20")) as a, \
            _Background("check-ns-b", "--uts", "host", "--ipc", "container:check-ns-a",
                        command=("sleep", "20")) as b:
        pairs = [("this notebook's kernel", os.getpid(), "itself", os.getpid()),
                 ("this notebook's kernel", os.getpid(), "a default container", a),
                 ("a default container", a, "a container with --uts host --ipc container:<the first>", b),
                 ("this notebook's kernel", os.getpid(), "the container with --uts host ...", b)]
        for name_a, pid_a, name_b, pid_b in pairs:
            expected = truth(pid_a, pid_b)
            try:
                answer = func(pid_a, pid_b)
            except Exception as e:
                _fail(f"your function raised {type(e).__name__}: {e}",
                      "read /proc/PID/ns/KIND of both pids: os.readlink gives names like 'net:[4026531840]'")
            if isinstance(answer, str) or not hasattr(answer, "__iter__"):
                _fail(f"your function returned {answer!r}", 'return a set of kind names, like {"user", "net"}')
            got = {str(k) for k in answer} & set(kinds)     # other entries (time, ...) are not judged
            if got != expected:
                missing, extra = sorted(expected - got), sorted(got - expected)
                what = "; ".join(filter(None, (missing and f"missing {', '.join(missing)}",
                                               extra and f"not shared but given: {', '.join(extra)}")))
                hint = ("compare the two processes' /proc/PID/ns/KIND links (os.readlink), kind by kind, "
                        f"for {', '.join(kinds)}")
                if got == set(kinds) and expected != got:
                    hint = ("you say they share everything: compare the link targets (the namespace's "
                            "inode number), not the link names")
                elif pid_a != os.getpid() and got == truth("self", pid_b):
                    hint = "compare the two pids you are given: your answer is for this notebook and pid_b"
                _fail(f"{name_a} and {name_b}: {what}", hint)
    _ok("Your function tells which namespaces two live processes share "
        "(kernel and container: only user; --uts host and --ipc container: share those too): correct")
