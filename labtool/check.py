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
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

from labtool import capabilities, cgroups, namespaces, notebook
from labtool.cgroups import watch
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


# --- 03-cgroups ------------------------------------------------------------------------

def _flags(flags, example):
    """A learner's answer given as ``labtool run`` flags: a string ("--pids-limit 5") or a list."""
    if isinstance(flags, str):
        flags = shlex.split(flags)
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) for f in flags):
        _fail(f"{flags!r} are not labtool run flags", f'write them as a string, like "{example}"')
    words = list(flags)
    if "busybox" in words or "labtool" in words or "run" in words[:1]:
        _fail("give only the flags, not a whole command", f'like "{example}": the check adds the rest')
    if any(f == "--rm" or f == "--name" or f.startswith("--name=") for f in words):
        _fail("leave out --rm and --name", "the check names its container itself and removes it afterwards")
    return words


def _named(words):
    """The learner's ``labtool run ...`` words with a --name of the check's own, so that the
    check finds (and removes) exactly this container, whatever else runs on the machine."""
    for i, word in enumerate(words):
        if word == "--name" and i + 1 < len(words):
            return words, words[i + 1]
        if word.startswith("--name="):
            return words, word.split("=", 1)[1]
    name = f"check-{os.getpid()}-{int(time.time() * 1000) % 100000}"
    at = words.index("run") + 1
    return words[:at] + ["--name", name] + words[at:], name


def _remove_named(name):
    """Remove container ``name`` if it exists, running or not (``labtool rm --force``); return
    the state it had (what ``inspect`` read), or None."""
    try:
        record = containers.find(name)
    except LabtoolError:
        return None
    notebook.labtool("rm", "--force", record.id, quiet=True)
    return record.state


def _last_error(r):
    return (r.err.strip().splitlines() or [f"exit code {r.code}"])[-1]


def oom_killed(command):
    """Exercise "get a container OOM-killed": ``command`` runs a container with a memory limit
    of the learner's choice that the kernel's OOM killer ends; inspect says OOMKilled."""
    example = "labtool run -m 20m busybox tail /dev/zero"
    _container_command(command, example)
    words = shlex.split(command)
    limit = None
    for i, word in enumerate(words):
        if word in ("-m", "--memory") and i + 1 < len(words):
            limit = words[i + 1]
        elif word.startswith("--memory="):
            limit = word.split("=", 1)[1]
    if limit is None:
        _fail("your command sets no memory limit",
              "without --memory (-m) the container may take all of the host's memory; the check does not run it")
    try:
        limit_bytes = cgroups.parse_bytes(limit, "--memory")
    except LabtoolError as e:
        _fail(str(e), "write the limit in docker's units: 20m is 20 MiB")
    if limit_bytes > 256 << 20:
        _fail(f"a limit of {limit} is more than this check waits for",
              "choose a small limit, 256m at most: your container has to fill it")
    if "--rm" in words:
        _fail("your command has --rm: the container is deleted when it ends, so inspect has nothing to read",
              "drop --rm (the check removes the container after reading it)")
    words, name = _named(words)
    try:
        r = _run_answer(shlex.join(words), timeout=20)
    finally:                                  # whatever happened: take away what it made
        state = _remove_named(name)
    if r.code == 125 or not state:
        _fail(f"your command did not run a container: {_last_error(r)}",
              "run it in a cell with sh(...) and read the error")
    mib = limit_bytes / (1 << 20)
    if state.get("OOMKilled") and r.code == 137:
        _ok(f"The kernel OOM-killed your container at its limit of {mib:g} MiB: exit code 137, "
            "inspect says OOMKilled: true: correct")
        return
    if state.get("OOMKilled"):
        _ok(f"The OOM killer struck in your container (limit {mib:g} MiB) and inspect says OOMKilled: true; "
            f"the container itself ended with {r.code} (its PID 1 survived the kill of a child): correct")
        return
    if r.code == 0:
        _fail(f"your container ended normally (exit code 0): it never needed {mib:g} MiB",
              "its command must keep more memory than the limit: `tail /dev/zero` keeps all it reads, "
              "because /dev/zero has no end of line")
    _fail(f"your container ended with exit code {r.code}, but not by the OOM killer: {_last_error(r)}",
          "give it a command that only grows, like tail /dev/zero, and a limit it will reach")


def half_of_last_cpu(flags):
    """Exercise "half of the last CPU": with ``flags``, a busy container runs only on the
    machine's last CPU and gets at most half of it."""
    example = "--cpuset-cpus 0 --cpus 0.25"
    words = _flags(flags, example)
    last = max(cgroups.online_cpus())
    try:
        with watch.running("check-cpu", *words, command=watch.BUSY) as c:
            with open(f"/proc/{c.pid}/status") as f:
                allowed = next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list:"))
            times, used = watch.sample(lambda: watch.cpu_seconds(c.cgroup), 1.0, 0.1)
    except RuntimeError as e:
        _fail(f"labtool could not start a container with your flags: {e}",
              "try them in a cell: labtool(\"run --rm YOUR FLAGS busybox true\")")
    share = (used[-1] - used[0]) / (times[-1] - times[0])
    if cgroups.parse_list(allowed) != {last}:
        hint = (f"this machine's CPUs are {cgroups.format_cpuset(cgroups.online_cpus())}: the last one is {last}; "
                "--cpuset-cpus chooses where it runs")
        _fail(f"your container may run on CPU(s) {allowed}, not on CPU {last} alone", hint)
    if share > 0.6:
        _fail(f"your container is on CPU {last}, but a busy loop took {share:.0%} of it",
              "--cpus N caps the CPU time per 100 ms period: N = 0.5 is half a CPU")
    _ok(f"Your container ran on CPU {last} only, and a busy loop in it got no more than half of that CPU: correct")


TWENTY_SLEEPS = "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo all started"


def largest_pids_limit(limit):
    """Exercise "the largest --pids-limit that stops it": with ``--pids-limit limit`` a shell
    that starts 20 sleeps in the background fails, with ``limit + 1`` it succeeds."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        _fail(f"{limit!r} is not a number", "give the limit as a whole number, like pids_limit = 7")
    if limit <= 0:
        _fail(f"--pids-limit {limit} means no limit at all", "give a positive number of processes")

    def attempt(n):
        return notebook.labtool("run", "--rm", "--pids-limit", str(n), "busybox", "sh", "-c", TWENTY_SLEEPS,
                                quiet=True, timeout=30)

    r = attempt(limit)
    if r.code == 0 and "all started" in r.out:
        _fail(f"with --pids-limit {limit} all 20 sleeps started",
              "count every process in the container: the 20 sleeps, and the shell that starts them")
    if "can't fork" not in r.err:
        _fail(f"with --pids-limit {limit} the container failed, but not for want of processes: {_last_error(r)}",
              "a limit that is too small for the shell itself to start is not what is asked")
    bigger = attempt(limit + 1)
    if bigger.code != 0 or "all started" not in bigger.out:
        _fail(f"--pids-limit {limit} stops the loop, but so does {limit + 1}: it is not the largest",
              "the shell is PID 1 of the container and counts too; nothing else runs in there")
    _ok(f"--pids-limit {limit} stops the 20th sleep (the shell and 19 sleeps fill it), and "
        f"--pids-limit {limit + 1} lets all start: correct")


def loop0_read_only(flags):
    """Exercise "a disk, read-only": with ``flags`` the container finds the host's /dev/loop0
    at /dev/disk, may read it, and may not open it for writing."""
    example = "--device /dev/sdz:/dev/here:r"
    words = _flags(flags, example)
    probe = ("stat -c '%F %t:%T' /dev/disk || exit 3; "
             "dd if=/dev/disk of=/dev/null count=0 2>/dev/null && echo read-ok; "
             "dd if=/dev/zero of=/dev/disk count=0 conv=notrunc 2>/dev/null && echo write-ok; true")
    r = notebook.labtool("run", "--rm", *words, "busybox", "sh", "-c", probe, quiet=True, timeout=30)
    if r.code == 125:
        _fail(f"labtool refused your flags: {_last_error(r)}", "--device takes HOST[:CONTAINER][:PERMISSIONS]")
    if r.code == 3:
        _fail("there is no /dev/disk in your container",
              "--device HOST:CONTAINER puts the host's device at the path CONTAINER inside")
    kind = (r.out.splitlines() or [""])[0]
    if kind != "block special file 7:0":
        _fail(f"/dev/disk in your container is {kind!r}, not the host's /dev/loop0 (block device 7:0)",
              "give the host's path first: --device /dev/loop0:...")
    if "read-ok" not in r.out:
        _fail("your container could not open /dev/disk for reading",
              "the permissions after the second colon must include r")
    if "write-ok" in r.out:
        _fail("your container may open /dev/disk for writing",
              "read-only is the permission r alone: --device HOST:CONTAINER:r")
    _ok("The host's /dev/loop0 is /dev/disk in your container: it reads, it may not write: correct")


# --- 04-overlay ------------------------------------------------------------------------

def _labtool_quiet(*args, timeout=30):
    return notebook.labtool(*args, quiet=True, timeout=timeout)


def _made_by(command, before):
    """The containers that ``command`` made: new since ``before`` (a set of ids), and named in it
    or running what it says (other labtool users may be making containers at the same time)."""
    new = [r for r in containers.all_records() if r.id not in before]
    mine = [r for r in new if (r.name and r.name in command) or
            (r.config.get("process", {}).get("args") and all(a in command for a in r.config["process"]["args"]))]
    return mine or (new if len(new) == 1 else [])


def _remove_made(command, before):
    """Remove (``rm -f -v``) the containers ``command`` made."""
    made = [r.id for r in _made_by(command, before)]
    if made:
        _labtool_quiet("rm", "-f", "-v", *made)


def _flag_words(flags, example):
    """A learner's ``labtool run`` flags: a string ("-v /a:/b") or a list of words."""
    import shlex

    if isinstance(flags, str):
        flags = shlex.split(flags)
    if not isinstance(flags, (list, tuple)) or not all(isinstance(f, str) for f in flags):
        _fail(f"{flags!r} are not labtool run flags", f'return them as a string, like "{example}"')
    words = [f for f in flags if f != "--rm"]
    if words[:1] in (["labtool"], ["run"]) or "busybox" in words:
        _fail("give only the flags, not a whole command", f'like "{example}": the check adds the rest')
    if any(f == "--name" or f.startswith("--name=") for f in words):
        _fail("leave out --name", "the check runs and removes its container itself")
    return words


def find_whiteouts(func):
    """Exercise "find the whiteouts": ``func(upperdir)`` returns the host paths of every
    whiteout (a character device 0:0) below an overlay upperdir, and nothing else."""
    import random
    import stat

    from labtool import overlay
    from labtool.images import store

    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def find_whiteouts(upperdir): ...")
    image = store.find("busybox")
    needed = ("sh", "busybox", "rm", "mknod", "touch", "mkdir")        # the script below uses them
    applets = sorted(n for n in os.listdir(os.path.join(image.layers[0], "bin")) if n not in needed)
    rng = random.Random()
    deleted = ["/etc/group", "/var/spool/cron", *(f"/bin/{n}" for n in rng.sample(applets, 2))]
    # besides the deletions: a character device that is no whiteout, an empty file, a file
    # made and deleted again (nothing below it: no whiteout), a directory deleted and made again
    # (opaque: no whiteout either)
    script = ("rm -rf " + " ".join(deleted) + "; mknod /tmp/null-copy c 1 3; : > /tmp/empty; "
              "touch /tmp/gone; rm /tmp/gone; rm -rf /var/www; mkdir /var/www; touch /var/www/index.html")
    name = "check-whiteouts"
    _labtool_quiet("rm", "-f", "-v", name)          # left over from a check that was interrupted?
    try:
        r = _labtool_quiet("run", "--name", name, "busybox", "sh", "-c", script)
        if r.code != 0:
            raise RuntimeError(r.err.strip() or f"exit code {r.code}")
        upper = overlay.storage(name)["UpperDir"]
        truth = set()
        for dirpath, dirnames, filenames in os.walk(upper):
            truth.update(os.path.join(dirpath, n) for n in dirnames + filenames
                         if overlay.is_whiteout(os.path.join(dirpath, n)))
        try:
            answer = func(upper)
        except Exception as e:
            _fail(f"your function raised {type(e).__name__}: {e}",
                  "walk the upperdir (os.walk) and look at each entry with os.lstat")
        if isinstance(answer, str) or not hasattr(answer, "__iter__"):
            _fail(f"your function returned {answer!r}", "return a list of host paths, like [upperdir + '/etc/group']")
        got = {os.path.normpath(str(p)) for p in answer}
        if got == truth:
            _ok(f"Your function finds the {len(truth)} whiteouts the check's container left (/etc/group, "
                "/var/spool/cron and two programs in /bin), and not the device 1:3, the empty file or the "
                "opaque directory: correct")
            return
        inside = {os.path.join(upper, p.lstrip("/")) for p in got if not p.startswith(upper)}
        if inside and inside <= truth:
            _fail("your function returned paths as the container sees them, like "
                  f"{sorted(got - truth)[0]!r}", "return host paths: the upperdir joined with the path")
        extra, missing = sorted(got - truth), sorted(truth - got)
        rel = lambda paths: ", ".join("/" + os.path.relpath(p, upper) for p in paths[:4])
        if extra:
            hints = []
            for p in extra:
                try:
                    st = os.lstat(p)
                except OSError:
                    hints.append("return paths that exist in the upperdir")
                    continue
                if stat.S_ISCHR(st.st_mode):
                    hints.append("a character device is a whiteout only when its device number is 0:0 (st_rdev == 0)")
                elif stat.S_ISDIR(st.st_mode) and overlay.is_opaque(p):
                    hints.append("an opaque directory (trusted.overlay.opaque) is no whiteout: "
                                 "it hides what is below it, but it is a directory")
                else:
                    hints.append("a whiteout is a character device (stat.S_ISCHR of os.lstat's st_mode), "
                                 "not any file")
            _fail(f"these are not whiteouts: {rel(extra)}", hints[0])
        hint = "walk the whole upperdir (os.walk), not only its top: whiteouts sit where the deleted file was"
        if any(os.path.relpath(p, upper) == "var/spool/cron" for p in missing) and len(missing) == 1:
            hint = ("a deleted directory leaves a whiteout as well; os.walk lists it among the files "
                    "(it is a device, not a directory)")
        _fail(f"your function missed {len(missing)} whiteout(s): {rel(missing)}", hint)
    except RuntimeError as e:
        _fail(f"the check could not run its container: {e}", "does labtool run --rm busybox true work?")
    finally:
        _labtool_quiet("rm", "-f", "-v", name)


def diff_shows_greeting(command):
    """Exercise "A /greeting": ``command`` makes a container whose ``labtool diff`` is
    exactly the one line ``A /greeting``."""
    import shlex

    from labtool import changes

    example = "labtool run --name NAME busybox sh -c '...'"
    _container_command(command, example)
    try:
        words = shlex.split(command)
    except ValueError as e:
        _fail(f"your command cannot be read: {e}", "every quote you open must be closed")
    if "--rm" in words:
        _fail("your command has --rm: the container, and its upperdir, are deleted when it ends",
              "drop --rm: labtool diff reads a container that still exists (the check removes it afterwards)")
    before = {r.id for r in containers.all_records()}
    try:
        r = _run_answer(command)
        made = _made_by(command, before)
        if "Conflict" in r.err:
            _fail(f"labtool refused: {_last_line(r)}",
                  "a container of that name exists already (did you run your command in a cell?): "
                  "labtool rm it, or leave --name out")
        if not made:
            _fail(f"your command made no container: {_last_line(r)}",
                  "run it in a cell with sh(...) and read the error")
        if r.code != 0:
            _fail(f"your container failed (exit code {r.code}): {_last_line(r)}",
                  "mind the quotes: the container's command is one string after sh -c")
        diffs = [[str(c) for c in changes.diff(rec.id)] for rec in made]
        lines = next((d for d in diffs if d == ["A /greeting"]), diffs[-1])
    finally:
        _remove_made(command, before)
    if lines == ["A /greeting"]:
        _ok("labtool diff of your container says exactly: A /greeting: correct")
        return
    shown = "; ".join(lines) or "nothing"
    if not lines:
        hint = "the container must make the file /greeting, e.g. with echo hello > /greeting"
    elif "A /greeting" in lines:
        hint = ("it changed more than that: only make the file /greeting (a change inside a directory of "
                "the image shows that directory as C too)")
    elif any(line.endswith("/greeting") for line in lines):
        hint = "the file must be at the top of the container's tree: /greeting"
    else:
        hint = "make a new file called /greeting, and change nothing else"
    _fail(f"labtool diff of your container says: {shown}", hint)


def _last_line(r):
    return (r.err.strip().splitlines() or [f"exit code {r.code}"])[-1]


def motd_read_only(func):
    """Exercise "a host file, read-only, at /etc/motd": ``func(host_file)`` returns the run
    flags that make the host's file /etc/motd in the container, readable, not writable."""
    import tempfile

    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def motd_flags(host_file): ...")
    example = "-v /host/file:/in/container:ro"
    top = tempfile.mkdtemp(prefix="labtool-check-motd-", dir="/tmp")
    host_file = os.path.join(top, "motd")
    token = "welcome to " + os.urandom(4).hex()
    with open(host_file, "w") as f:
        f.write(token + "\n")
    probe = ("if [ -d /etc/motd ]; then echo DIR; fi; cat /etc/motd; "
             "echo changed >> /etc/motd && echo WROTE; true")
    try:
        try:
            words = _flag_words(func(host_file), example)
        except AssertionError:
            raise
        except Exception as e:
            _fail(f"your function raised {type(e).__name__}: {e}", "return the flags, like \"" + example + '"')
        r = _labtool_quiet("run", "--rm", *words, "busybox", "sh", "-c", probe)
        if r.code == 125:
            _fail(f"labtool refused your flags: {_last_line(r)}", "-v takes HOST:CONTAINER[:ro]")
        if r.out.startswith("DIR"):
            _fail("/etc/motd in your container is a directory",
                  "the host path before the ':' must be the host_file you are given: a host path that does "
                  "not exist is made as a directory")
        if token not in r.out:
            _fail("/etc/motd in your container does not show the host file's text",
                  "bind the host file onto /etc/motd: -v HOST_FILE:/etc/motd")
        with open(host_file) as f:
            changed = f.read() != token + "\n"
        if "WROTE" in r.out or changed:
            hint = "add :ro after the path in the container: the bind mount is then read-only"
            if "--read-only" in words:
                hint = ("--read-only makes the container's root read-only, not the mounts on it: "
                        "the bind needs :ro of its own")
            _fail("your container could write to /etc/motd, and so to the host's file", hint)
        if "Read-only file system" not in r.err:
            _fail(f"the write failed, but not because the mount is read-only: {_last_line(r)}",
                  "make the bind itself read-only, with :ro")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    _ok("The host's file is /etc/motd in your container: it reads, and a write fails with "
        "'Read-only file system': correct")


def volume_mailbox(command):
    """Exercise "a letter in a volume": ``command`` writes hello into the file letter of
    the named volume mailbox, so that a second container reads it there."""
    from labtool import volumes

    example = "labtool run --rm -v NAME:/PATH busybox sh -c '...'"
    _container_command(command, example)
    if "mailbox" not in command:
        _fail("your command does not name the volume mailbox", "-v mailbox:/PATH mounts the volume mailbox at PATH")
    if "-v /mailbox" in command or "--volume /mailbox" in command:
        _fail("/mailbox is a path: with a leading / it is a host directory (a bind mount), or an anonymous volume",
              "a volume is named without a slash: -v mailbox:/mail")

    def drop_mailbox():
        try:
            users = volumes.users("mailbox")
        except LabtoolError:
            return
        if users:
            _fail(f"the volume mailbox is used by container(s) {', '.join(u[:12] for u in users)}",
                  "remove them first (labtool rm -v ...): the check starts with a new, empty mailbox")
        try:
            volumes.remove("mailbox")
        except volumes.VolumeNotFound:
            pass

    drop_mailbox()
    before = {r.id for r in containers.all_records()}
    try:
        r = _run_answer(command)
        _remove_made(command, before)
        if r.code != 0:
            _fail(f"your command failed (exit code {r.code}): {_last_line(r)}",
                  "run it in a cell with sh(...) and read the error")
        try:
            data = volumes.find("mailbox").data
        except volumes.VolumeNotFound:
            _fail("your command made no volume called mailbox",
                  "-v mailbox:/mail: a name, a colon, a path (a source with a / in it is a host path: a bind mount)")
        read = _labtool_quiet("run", "--rm", "-v", "mailbox:/box", "busybox", "cat", "/box/letter")
        if read.code != 0:
            found = sorted(os.listdir(data))
            _fail(f"a second container finds no file letter in mailbox (it holds: {', '.join(found) or 'nothing'})",
                  "write the file letter at the top of the volume: with -v mailbox:/mail it is /mail/letter")
        if read.out.strip() != "hello":
            _fail(f"mailbox's letter says {read.out.strip()!r}, not 'hello'", "echo hello > /mail/letter")
    finally:
        _remove_made(command, before)
        drop_mailbox()
    _ok("A second container reads hello from mailbox's letter: the volume outlived the container "
        "that wrote it: correct")


# --- 00-overview -----------------------------------------------------------------------

def _log_times(name, tail=40):
    """The arrival times (seconds since the epoch) of the last lines of ``labtool logs -t NAME``."""
    import datetime

    times = []
    for line in _labtool_quiet("logs", "-t", "--tail", str(tail), name).out.splitlines():
        stamp = line.split(" ", 1)[0]
        match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp)
        if match:
            moment = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
            fraction = float("0." + (match.group(2) or "0"))
            times.append(moment.replace(tzinfo=datetime.timezone.utc).timestamp() + fraction)
    return times


def ticker_runs(command):
    """Exercise "a ticker": ``command`` starts a detached container named ticker that prints
    a line every 0.2 seconds; ps shows it up, and its log grows at that pace."""
    example = "labtool run -d --name ticker busybox sh -c '...'"
    _container_command(command, example)
    _labtool_quiet("rm", "-f", "ticker")            # left by an earlier try (its cell, or this check)
    before = {r.id for r in containers.all_records()}
    try:
        try:
            r = notebook.sh(command, quiet=True, timeout=8)
        except subprocess.TimeoutExpired:
            _fail("your command did not return within 8 seconds: it stayed attached to its container",
                  "-d (--detach) starts the container in the background, prints its id and returns")
        if r.code != 0:
            _fail(f"your command failed (exit code {r.code}): {_last_line(r)}",
                  "run it in a cell with sh(...) and read the error")
        try:
            record = containers.find("ticker")
        except LabtoolError:
            made = [rec.name for rec in containers.all_records() if rec.id not in before]
            called = f" (yours is called {made[0]})" if made else ""
            _fail(f"there is no container named ticker{called}", "give it the name with --name ticker")
        time.sleep(1.2)                                  # let it tick a few times
        record = containers.load(record.id)
        if record.status != "running":
            hint = ("a container lives as long as its command: repeat the echo in a loop, "
                    "while true; do echo tick; sleep 0.2; done")
            if not re.fullmatch(r"[0-9a-f]{64}", r.out.strip()):
                hint += "; and start it with -d, so that labtool returns while it runs"
            _fail(f"your ticker is not running ({record.status}, exit code {record.state.get('ExitCode')})", hint)
        rows = _labtool_quiet("ps", "-f", "name=ticker").out.splitlines()[1:]
        if not any(row.split()[-1] == "ticker" and " Up " in row for row in rows):
            _fail("labtool ps does not list ticker as Up", "is it the container of your command? (labtool ps -a)")
        times = _log_times("ticker")
        if len(times) < 2:
            _fail(f"your ticker printed {len(times)} line(s) in more than a second",
                  "print a line in each round of the loop (echo tick) and sleep 0.2 between two")
        gaps = sorted(b - a for a, b in zip(times, times[1:]))
        gap = gaps[len(gaps) // 2]
        if gap < 0.1:
            _fail(f"your ticker prints a line every {gap * 1000:.0f} ms: too fast",
                  "sleep 0.2 between two lines (busybox's sleep takes fractions of a second)")
        if gap > 0.4:
            _fail(f"your ticker prints a line every {gap:.1f} s: too slow", "sleep 0.2, not longer")
    finally:
        _labtool_quiet("rm", "-f", "ticker")
        _remove_made(command, before)
    _ok("ticker ran detached, labtool ps listed it as Up, and its log grew by a line about every 0.2 s: correct")


def _settled(record):
    """True once the supervisor is done with a container: it stopped, and its restart policy
    will not start it again (the supervisor may linger a moment after deciding so)."""
    from labtool.engine import supervisor

    if record.status not in ("exited", "dead", "created"):
        return False
    state = record.state
    return not record.supervisor_pid or not supervisor.should_restart(
        record.config.get("restart", "no"), state.get("ExitCode", 0), state.get("RestartCount", 0), state)


def restarted_twice(command):
    """Exercise "crash, and be restarted twice": ``command`` makes a container whose command
    fails; labtool restarts it exactly twice, then leaves it exited."""
    example = "labtool run -d --restart ... busybox sh -c '...'"
    _container_command(command, example)
    before = {r.id for r in containers.all_records()}
    try:
        try:
            r = notebook.sh(command, quiet=True, timeout=15)
        except subprocess.TimeoutExpired:
            _fail("your command did not return within 15 seconds",
                  "its container's command should fail at once, e.g. sh -c 'exit 1'; -d returns at once anyway")
        made = _made_by(command, before)
        if r.code == 125 or not made:
            hint = "run it in a cell with sh(...) and read the error"
            if "--rm" in r.err:
                hint = "--rm removes the container when it exits, so it cannot be restarted: leave --rm out"
            _fail(f"your command made no container: {_last_line(r)}", hint)
        cid = made[-1].id
        record = containers.wait_for(cid, lambda x: x.state.get("RestartCount", 0) > 2 or _settled(x), 10)
    finally:
        _remove_made(command, before)
    if record is None:
        _fail("your container was removed before it was done", "leave out --rm")
    count, code = record.state.get("RestartCount", 0), record.state.get("ExitCode", 0)
    policy = record.config.get("restart", "no")
    if count == 2 and record.status == "exited" and code != 0:
        _ok(f"Your container failed ({code}), was restarted twice (RestartCount 2) and then left exited: "
            "three runs in all: correct")
        return
    if count > 2:
        hint = "on-failure:N restarts a failing container N times at most"
        if policy.startswith(("always", "unless-stopped")):
            hint = f"--restart {policy} restarts it again and again, without end: " + hint
        elif policy == "on-failure":
            hint = "on-failure without a count has no end either: " + hint
        _fail(f"your container was restarted more than twice (RestartCount {count} when the check stopped "
              "watching)", hint)
    if record.status not in ("exited", "dead"):
        _fail(f"after 10 seconds your container is still {record.status}",
              "its command should fail at once, like sh -c 'exit 1', not run for a while")
    if code == 0:
        _fail("your container's command succeeded (exit code 0): on-failure does not restart success",
              "make the command fail: sh -c 'exit 1'")
    if count == 0:
        _fail(f"your container failed (exit code {code}) and was never restarted (policy: {policy})",
              "ask for it: --restart on-failure:2")
    _fail(f"your container was restarted {count} time(s), not twice", "on-failure:N restarts it N times at most")


def _signal_name(answer):
    """A learner's answer as "SIGKILL", or None; a number is refused (a name is asked for)."""
    if answer is None:
        return None
    if isinstance(answer, signal.Signals):
        return answer.name
    if isinstance(answer, str):
        name = answer.strip().upper()
        return name if name.startswith("SIG") else "SIG" + name
    _fail(f"your function returned {answer!r}", "return a signal's name, like 'SIGKILL', or None")


def names_the_signal(func):
    """Exercise "which signal was it?": ``func(exit_code)`` names the signal that ended a
    container ("SIGKILL" for 137), or returns None when the command exited by itself."""
    import random

    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def signal_of(exit_code): ...")
    chosen = [signal.SIGKILL] + random.sample([signal.SIGTERM, signal.SIGHUP, signal.SIGINT,
                                               signal.SIGUSR1, signal.SIGUSR2], 2)
    names = [f"check-signal-{i}" for i in range(len(chosen))]
    _labtool_quiet("rm", "-f", *names)
    cases = []                                       # (what happened, its exit code, the right answer)
    try:
        for name in names:                           # --init: the signal reaches sleep, not a PID 1
            r = _labtool_quiet("run", "-d", "--init", "--name", name, "busybox", "sleep", "30")
            if r.code != 0:
                raise RuntimeError(_last_line(r))
        for name, sig in zip(names, chosen):
            _labtool_quiet("kill", "-s", sig.name, name)
            code = int(_labtool_quiet("wait", name).out.split()[0])
            cases.append((f"labtool kill -s {sig.name[3:]}", code, sig.name))
        plain = random.choice([0, 1, 2, 42])
        r = _labtool_quiet("run", "--rm", "busybox", "sh", "-c", f"exit {plain}")
        cases.append((f"sh -c 'exit {plain}'", r.code, None))
    except (RuntimeError, ValueError, IndexError) as e:
        _fail(f"the check could not run its containers: {e}", "does labtool run --rm busybox true work?")
    finally:
        _labtool_quiet("rm", "-f", *names)
    for what, code, right in cases:
        try:
            answer = func(code)
        except Exception as e:
            _fail(f"signal_of({code}) raised {type(e).__name__}: {e}",
                  "a code above 128 is 128 + the signal's number: signal.Signals(number).name names it")
        got = _signal_name(answer)
        if got == right:
            continue
        if right is None:
            _fail(f"signal_of({code}) says {got}, but that container ran {what} and ended by itself",
                  "an exit code of 128 or less is the command's own: return None")
        number = code - 128
        _fail(f"a container ended by {what} exited with {code}; signal_of({code}) says {got}, not {right}",
              f"{code} = 128 + {number}: the shell's convention (kept by Docker) for a command killed by "
              f"signal {number}; signal.Signals({number}).name is '{right}'")
    shown = ", ".join(f"{code} -> {right}" for _, code, right in cases[:1])
    _ok(f"Your function named the signal of {len(cases) - 1} killed containers ({shown} among them) "
        "and said None for one that exited by itself: correct")


def entrypoint_env(command):
    """Exercise "env as the entrypoint": ``command`` runs busybox with its entrypoint
    replaced by env, and GREETING=hello in the container's environment."""
    example = "labtool run --rm --entrypoint ... busybox"
    _container_command(command, example)
    try:
        words = shlex.split(command)
    except ValueError as e:
        _fail(f"your command cannot be read: {e}", "every quote you open must be closed")
    if not any(w == "--entrypoint" or w.startswith("--entrypoint=") for w in words):
        _fail("your command does not replace the entrypoint",
              "--entrypoint PROGRAM (before the image's name) runs PROGRAM in place of the image's ENTRYPOINT")
    before = {r.id for r in containers.all_records()}
    try:
        r = _run_answer(command)
    finally:
        _remove_made(command, before)
    if r.code != 0:
        _fail(f"your container failed (exit code {r.code}): {_last_line(r)}",
              "run it in a cell with sh(...) and read the error")
    lines = [line for line in r.out.splitlines() if line]
    if not lines or not any(line.startswith("PATH=") for line in lines) or not all("=" in line for line in lines):
        first = lines[0] if lines else "nothing"
        _fail(f"your container printed {first!r}..., not its environment",
              "the program env prints every variable of its environment, one NAME=value a line: "
              "--entrypoint env")
    if "GREETING=hello" not in lines:
        _fail("GREETING=hello is not in your container's environment",
              "-e GREETING=hello (--env) sets it; flags go before the image's name")
    _ok("Your container ran env in place of the image's command, and GREETING=hello is in its "
        "environment: correct")


# --- 05-networking ---------------------------------------------------------------------

def _fetch(url, timeout=2.0, tries=20):
    """The body of ``url`` (plain HTTP, from this process), or "" when it never answers."""
    import urllib.request

    for _ in range(tries):
        try:
            return urllib.request.urlopen(url, timeout=timeout).read().decode()
        except OSError:
            time.sleep(0.1)
    return ""


def published_on_loopback(flags):
    """Exercise "publish a web server on the host's loopback": with the learner's ``labtool run``
    flags, busybox httpd's port 80 answers on 127.0.0.1 of the host, and only there."""
    from labtool.network import ports

    example = "-p 127.0.0.1:8080:80"
    words = _flags(flags, example)
    name = f"check-05-web-{os.getpid()}"
    _remove_named(name)
    r = notebook.labtool("run", "-d", "--name", name, *words, "busybox", "httpd", "-f", "-p", "80", "-h", "/etc",
                         quiet=True)
    try:
        if r.code != 0:
            _fail(f"the container did not start: {_last_error(r)}", f"flags like \"{example}\" publish port 80")
        record = containers.find(name)
        bindings = [ports.PortBinding.from_state(d) for d in record.state.get("Ports", [])]
        to_80 = [b for b in bindings if b.key == "80/tcp"]
        if not to_80:
            _fail("port 80 of the container is not published", "-p HOST_IP:HOST_PORT:CONTAINER_PORT")
        if any(b.host_ip != "127.0.0.1" for b in to_80):
            _fail(f"port 80 is published on {to_80[0].shown_ip}: every address of the host, not its loopback only",
                  "put the host address in front: -p 127.0.0.1:...")
        body = _fetch(f"http://127.0.0.1:{to_80[0].host_port}/hostname")
        if body.strip() != record.id[:12]:
            _fail("nothing answered on the published port", "the container port is 80: -p 127.0.0.1:PORT:80")
    finally:
        _remove_named(name)
    _ok(f"127.0.0.1:{to_80[0].host_port} on the host reaches busybox httpd in the container, and only the "
        f"host's loopback does: correct")


PRIVATE_POOLS = ("172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8")


def _first_free(taken, prefix):
    import ipaddress

    nets = [ipaddress.ip_network(t, strict=False) for t in taken]
    for pool in PRIVATE_POOLS:
        for candidate in ipaddress.ip_network(pool).subnets(new_prefix=prefix):
            if not any(candidate.overlaps(n) for n in nets):
                return str(candidate)
    return None


def free_subnet(func):
    """Exercise "choose a subnet that clashes with nothing": ``func(taken, prefix)`` returns the
    first block of that prefix length in 172.16.0.0/12, then 192.168.0.0/16, then 10.0.0.0/8,
    that overlaps none of ``taken`` (CIDR strings); the check then creates a network with the
    answer for this host's real routes."""
    import ipaddress

    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def free_subnet(taken, prefix): ...")
    cases = [([], 24), (["172.16.0.0/24"], 24), (["172.16.0.0/12"], 16), (["172.16.0.0/13", "172.24.0.0/14"], 16),
             (["172.16.0.0/12", "192.168.0.0/17"], 20), (["172.17.5.0/24", "172.16.0.0/16"], 16)]
    for taken, prefix in cases:
        expected = _first_free(taken, prefix)
        try:
            got = func(list(taken), prefix)
        except Exception as e:
            _fail(f"free_subnet({taken}, {prefix}) raised {type(e).__name__}: {e}",
                  "return a string like '172.16.0.0/24'")
        try:
            got_net = ipaddress.ip_network(str(got))
        except ValueError:
            _fail(f"free_subnet({taken}, {prefix}) returned {got!r}: not a subnet",
                  "return a string like '172.16.0.0/24'")
        if str(got_net) != expected:
            _fail(f"free_subnet({taken}, {prefix}) returned {got}, expected {expected}",
                  "walk the pools in order, in blocks of that prefix (ipaddress: network.subnets(new_prefix=...)) "
                  "and skip a block that .overlaps() anything taken")
    # the real thing: this host's routes, and labtool's networks (bridge routes are among them)
    routes = [line.split()[0] for line in subprocess.run(["ip", "-4", "route"], capture_output=True,
                                                         text=True).stdout.splitlines()
              if line and not line.startswith("default")]
    answer = str(func(routes, 24))
    name = f"check-05-net-{os.getpid()}"
    notebook.labtool("network", "rm", name, quiet=True)
    r = notebook.labtool("network", "create", "--subnet", answer, name, quiet=True)
    notebook.labtool("network", "rm", name, quiet=True)
    if r.code != 0:
        _fail(f"labtool network create --subnet {answer} failed: {_last_error(r)}",
              "the routes of this host are the taken subnets")
    _ok(f"your free_subnet finds the first free block; for this host: {answer}, and labtool agrees: correct")


def connected_live(command):
    """Exercise "connect a running container": one ``labtool`` command after which ``ex-client``
    (on ex-right) reaches ``ex-web`` (on ex-left) by its name, without a restart."""
    if not isinstance(command, str) or not re.search(r"\blabtool\s+network\s+\w+", command):
        _fail(f"{command!r} is not a labtool network command", 'a string, like "labtool network ... "')
    before = containers.find("ex-client").state.get("Pid")
    r = _run_answer(command)
    if r.code != 0:
        _fail(f"your command failed: {_last_error(r)}", "labtool network connect NETWORK CONTAINER")
    after = containers.find("ex-client")
    if after.state.get("Pid") != before or not after.running_pid:
        _fail("ex-client was restarted", "a network is connected to a running container, live")
    web = containers.find("ex-web")
    body = notebook.labtool("exec", "ex-client", "timeout", "3", "wget", "-qO-", "http://ex-web/hostname",
                            quiet=True).out.strip()
    if body != web.id[:12]:
        _fail("ex-client still cannot reach http://ex-web/", "it must share a network with ex-web: which one is it on?")
    _ok("ex-client now shares ex-left with ex-web, finds it by name and fetches its page, "
        "with the same PID 1 as before: correct")


# --- 06-capabilities -------------------------------------------------------------------

def _cap_name_set(answer):
    """A learner's capability names, spelled any way ("chown", "CAP_CHOWN"), as {"CAP_CHOWN", ...};
    None if ``answer`` is not a collection of strings."""
    if isinstance(answer, str) or not hasattr(answer, "__iter__"):
        return None
    found = set()
    for item in answer:
        if not isinstance(item, str):
            return None
        found.add("CAP_" + item.strip().upper().removeprefix("CAP_"))
    return found


def _differ(expected, got):
    missing, extra = sorted(expected - got), sorted(got - expected)
    return "; ".join(filter(None, (missing and f"missing {', '.join(missing)}",
                                   extra and f"not in it but given: {', '.join(extra)}")))


def cap_names(func):
    """Exercise "decode a mask": ``func(text)`` turns a mask as /proc/PID/status writes it
    ("00000000a80425fb") into the names of its capabilities."""
    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def cap_names(text): ...")
    cases = [("00000000a80425fb", "Docker's default set"), ("0000000000000000", "the empty set"),
             ("0000000000200000", "one capability"), ("0000000000003000", "two neighbours"),
             (f"{capabilities.host_bounding():016x}", "this host's bounding set"),
             ("000001ffffffffff", "all 41")]
    for text, what in cases:
        try:
            answer = func(text)
        except Exception as e:
            _fail(f"for {text!r} your function raised {type(e).__name__}: {e}",
                  "int(text, 16) reads the hex digits; then bit N set means capability N")
        got = _cap_name_set(answer)
        if got is None:
            _fail(f"for {text!r} ({what}) your function returned {answer!r}",
                  "return a list or a set of names, like ['CAP_CHOWN', 'CAP_KILL']")
        mask = int(text, 16)
        expected = set(capabilities.names_of(mask))
        if got != expected:
            hint = "bit N of the number is capability number N of capabilities.CAPABILITIES (or man 7 capabilities)"
            if got in (set(capabilities.names_of(mask << 1)), set(capabilities.names_of(mask >> 1))):
                hint = "off by one: bit 0 (the value 1) is CAP_CHOWN, capability number 0"
            _fail(f"{what} ({text}): {_differ(expected, got)}", hint)
    _ok("Your function reads a capability mask the way the kernel writes it: correct")


PREDICTION_CASES = [
    ([], [], "", "the default"),
    ([], ["NET_RAW"], "", "--cap-drop NET_RAW"),
    (["net_admin"], ["ALL"], "", "--cap-drop ALL --cap-add net_admin"),
    (["ALL"], ["SYS_ADMIN"], "", "--cap-add ALL --cap-drop SYS_ADMIN"),
    (["CAP_CHOWN"], ["chown"], "", "--cap-drop chown --cap-add CAP_CHOWN"),
    (["SYS_NICE"], [], "1000", "--cap-add SYS_NICE --user 1000"),
]


def predicted_caps(func):
    """Exercise "predict the set": ``func(cap_add, cap_drop, user)`` returns the names in the
    CapEff of a container's command; the check asks a real container each time."""
    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def effective_caps(cap_add, cap_drop, user=''): ...")
    for add, drop, user, flags in PREDICTION_CASES:
        words = [w for name in add for w in ("--cap-add", name)] + [w for name in drop for w in ("--cap-drop", name)]
        words += ["--user", user] if user else []
        r = notebook.labtool("run", "--rm", *words, "busybox", "grep", "CapEff", "/proc/self/status", quiet=True)
        if r.code != 0:
            raise RuntimeError(f"the check could not run its container ({flags}): {_last_error(r)}")
        truth = set(capabilities.names_of(int(r.out.split()[1], 16)))
        try:
            answer = func(list(add), list(drop), user)
        except Exception as e:
            _fail(f"with {flags} your function raised {type(e).__name__}: {e}",
                  "cap_add and cap_drop are lists of names as a user types them; user is '' or like '1000'")
        got = _cap_name_set(answer)
        if got is None:
            _fail(f"with {flags} your function returned {answer!r}", "return a set of names, like {'CAP_CHOWN'}")
        if got != truth:
            hints = {
                "the default": "with no flags a container gets Docker's 14: decode 00000000a80425fb",
                "--cap-drop ALL --cap-add net_admin": "with --cap-drop ALL only what --cap-add names is left; "
                                                      "names come in any case, with or without CAP_",
                "--cap-add ALL --cap-drop SYS_ADMIN": "ALL means all this host has: its bounding set (CapBnd of "
                                                      "this notebook's kernel in /proc/self/status), minus the drops",
                "--cap-drop chown --cap-add CAP_CHOWN": "Docker drops first, then adds: an add wins",
                "--cap-add SYS_NICE --user 1000": "a user other than root gets no effective capabilities, whatever "
                                                  "--cap-add says: Docker fills no ambient set",
            }
            _fail(f"with {flags}: {_differ(truth, got)}", hints.get(flags, "drops come off the default set"))
    _ok(f"Your function predicts the effective set of {len(PREDICTION_CASES)} containers, "
        "--user and ALL included: correct")


SMALLEST_TASK = "mknod /tmp/console c 5 1 && chown 1000:1000 /tmp/console && renice -n -5 $$"


def _cap_flags(words):
    """--cap-add X and --cap-drop X (or --cap-add=X) from a learner's words; anything else is refused."""
    add, drop = [], []
    i = 0
    while i < len(words):
        flag, _, value = words[i].partition("=")
        if flag not in ("--cap-add", "--cap-drop"):
            _fail(f"{words[i]!r} is not --cap-add or --cap-drop",
                  "this exercise is about capabilities only: give --cap-add and --cap-drop flags")
        if not value:
            i += 1
            if i == len(words):
                _fail(f"{flag} at the end has no capability", f"write {flag} NAME")
            value = words[i]
        (add if flag == "--cap-add" else drop).append(value)
        i += 1
    return add, drop


def smallest_caps(flags):
    """Exercise "the smallest set": with ``flags`` (--cap-add / --cap-drop) a container runs
    SMALLEST_TASK as root, and with any one of the capabilities it keeps taken away, it cannot."""
    from labtool.spec import Capabilities

    words = _flags(flags, "--cap-drop ALL --cap-add KILL")
    add, drop = _cap_flags(words)
    try:
        kept = capabilities.plan(Capabilities(add, drop)).caps
    except LabtoolError as e:
        _fail(str(e), "names as man 7 capabilities writes them: MKNOD, CAP_CHOWN, net_admin ...")

    def attempt(*cap_words):
        return notebook.labtool("run", "--rm", *cap_words, "busybox", "sh", "-c", SMALLEST_TASK,
                                quiet=True, timeout=30)

    r = attempt(*words)
    if r.code != 0:
        _fail(f"with your flags the task fails: {_last_error(r)}",
              "which command of the task failed? man 7 capabilities names the capability each one needs")
    names = capabilities.names_of(kept)
    for name in names:
        rest = [w for other in names if other != name for w in ("--cap-add", other)]
        if attempt("--cap-drop", "ALL", *rest).code == 0:
            hint = ("start from nothing, --cap-drop ALL, and add only what the task needs"
                    if len(names) > 4 else "take it out and try again")
            _fail(f"{name} is not needed: the task runs without it ({len(names)} capabilities given)", hint)
    _ok(f"The task needs {', '.join(names)}, each of them, and nothing more: the smallest set, correct")


# --- 04b-images: the registry -------------------------------------------------------------

def pushed(host, name):
    """Exercise: push an image to the notebook's registry as ``name`` (``REPO:TAG``). The
    registry is asked (GET /v2/REPO/manifests/TAG); its digest must be the one of the local
    image of that name, as ``labtool push`` printed it."""
    import urllib.error
    import urllib.request

    from labtool.images import reference, registry, store

    ref = reference.parse(f"{host}/{name}")
    req = urllib.request.Request(f"http://{host}/v2/{ref.repository}/manifests/{ref.wanted}",
                                 headers={"Accept": registry.ACCEPT})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            digest = resp.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError as e:
        _fail(f"the registry at {host} has no {ref.repository}:{ref.wanted} (HTTP {e.code})",
              f"give the image that name with `labtool tag busybox {ref.local}`, then `labtool push {ref.local}`")
    except OSError as e:
        _fail(f"the registry at {host} does not answer ({e})", "run the cell that starts the registry again")
    local = store.find(ref.local)
    if local is None:
        _fail(f"the registry has {ref.repository}:{ref.wanted}, but there is no local image {ref.local}",
              f"pull it back: labtool pull {ref.local}")
    if digest not in (local.manifest, store.repo_digest(ref.local)):
        _fail(f"the registry's {ref.repository}:{ref.wanted} is {digest[:19]}..., the local one "
              f"{local.manifest[:19]}...", f"push again: labtool push {ref.local}")
    _ok(f"{ref.local} is in the registry with digest {digest[:19]}..., the same as the local image")


# --- 04b-images: builds -------------------------------------------------------------------

def _build_answer(dockerfile, tag, files=None):
    """Build the learner's Dockerfile text in a fresh context (with ``files``); the Result and
    the context directory (the caller removes both the image and the directory)."""
    import tempfile

    if not isinstance(dockerfile, str) or "FROM" not in dockerfile.upper():
        _fail("the answer is not a Dockerfile", "write its text in triple quotes, starting with FROM busybox")
    top = tempfile.mkdtemp(prefix="labtool-04b-check-", dir="/tmp")
    for name, text in dict(files or {}, Dockerfile=dockerfile).items():
        with open(os.path.join(top, name), "w") as f:
            f.write(text)
    return notebook.labtool("build", "-t", tag, top, quiet=True, timeout=120), top


def _drop_build(tag, top, *outputs):
    """Remove the check's image, and the untagged images its builds left (earlier stages,
    an image a second build untagged), then its context."""
    from labtool.images import store

    notebook.labtool("rmi", "-f", tag, quiet=True)
    made = [i for out in outputs for i in re.findall(r"^ ---> ([0-9a-f]{12})$", out, re.M)]
    for image_id in dict.fromkeys(reversed(made)):
        image = store.find_by_id(image_id)
        if image is not None and not store.entry_of(image).refs and not store.children_of(image.id):
            notebook.labtool("rmi", image_id, quiet=True)
    shutil.rmtree(top, ignore_errors=True)


def _build_failed(r):
    lines = [line for line in (r.err or r.out).splitlines() if line.strip()]
    _fail(f"the Dockerfile does not build: {lines[-1] if lines else f'exit code {r.code}'}",
          "build it in a cell of its own (labtool build -t try DIR) and read the step that fails")


def greets(dockerfile):
    """Exercise: ``run IMAGE`` prints "Hello, world"; ``run IMAGE Alice`` prints "Hello, Alice"."""
    tag = "check-04b-greets"
    r, top = _build_answer(dockerfile, tag)
    try:
        if r.code:
            _build_failed(r)
        plain = notebook.labtool("run", "--rm", tag, quiet=True)
        named = notebook.labtool("run", "--rm", tag, "Alice", quiet=True)
    finally:
        _drop_build(tag, top, r.out)
    hint = 'the fixed part is the ENTRYPOINT (exec form: ["echo", "Hello,"]), the part to replace is the CMD'
    if plain.out.strip() != "Hello, world":
        _fail(f"labtool run IMAGE printed {plain.out.strip() or plain.err.strip()!r}, not 'Hello, world'", hint)
    if named.out.strip() != "Hello, Alice":
        _fail(f"labtool run IMAGE Alice printed {named.out.strip() or named.err.strip()!r}, not 'Hello, Alice'",
              hint + " (a shell-form ENTRYPOINT ignores the arguments)")
    _ok("ENTRYPOINT is the fixed part, CMD the default arguments that run's arguments replace: correct")


def cache_friendly(dockerfile):
    """Exercise: after app.txt changes, the slow RUN step comes from the cache, and the image
    still shows the new app.txt."""
    tag = "check-04b-cache"
    r, top = _build_answer(dockerfile, tag, {"app.txt": "version 1\n"})
    try:
        if r.code:
            _build_failed(r)
        with open(os.path.join(top, "app.txt"), "w") as f:
            f.write("version 2\n")
        again = notebook.labtool("build", "-t", tag, top, quiet=True, timeout=120)
        if again.code:
            _build_failed(again)
        shown = notebook.labtool("run", "--rm", tag, quiet=True).out.strip()
    finally:
        _drop_build(tag, top, r.out, again.out if "again" in locals() else "")
    steps = re.findall(r"^Step \d+/\d+ : (.*)\n((?: ---> .*\n)+)", again.out, re.M)
    runs = [(text, "Using cache" in after) for text, after in steps if text.upper().startswith("RUN")]
    if not runs:
        _fail("the Dockerfile has no RUN step any more", "keep the slow RUN: only move lines")
    missed = [text for text, cached in runs if not cached]
    if missed:
        _fail(f"after app.txt changed, '{missed[0]}' ran again", "COPY the file that changes after the slow "
              "step: a step's cache is lost as soon as a step before it changed")
    if shown != "version 2":
        _fail(f"the image shows {shown!r}, not the new app.txt ('version 2')", "the COPY of app.txt must stay")
    _ok("the slow RUN came from the cache and the new app.txt is in the image: the order is right")


def small_image(dockerfile):
    """Exercise: /report.txt says 2000000 (the size of a 2 MB tool the build needs), and the
    image is at most 100 kB bigger than busybox: the tool is not in any of its layers."""
    tag = "check-04b-small"
    r, top = _build_answer(dockerfile, tag)
    try:
        if r.code:
            _build_failed(r)
        report = notebook.labtool("run", "--rm", tag, "cat", "/report.txt", quiet=True).out.strip()
        sizes = json.loads(notebook.labtool("image", "inspect", tag, "busybox", quiet=True).out)
    finally:
        _drop_build(tag, top, r.out)
    if report != "2000000":
        _fail(f"/report.txt says {report!r}, not 2000000", "make /tmp/toolchain with head -c 2000000 /dev/zero, "
              "then wc -c < /tmp/toolchain > /report.txt")
    extra = sizes[0]["Size"] - sizes[1]["Size"]
    if extra > 100_000:
        _fail(f"the image is {extra / 1e6:.2f} MB bigger than busybox: the toolchain is still in a layer",
              "rm in a later RUN only hides it; make and remove it in one RUN (&&), or build in a stage "
              "of its own and COPY --from it only /report.txt")
    _ok(f"/report.txt is right and the image is only {extra} bytes bigger than busybox: small, correct")

# --- 07-privileged ---------------------------------------------------------------------

# (flags, privileged?, a hint for an answer that gets this case wrong)
PRIVILEGE_CASES = [
    ([], False, "a default container: Docker's 14 capabilities, a small /dev, masked paths"),
    (["--cap-add", "ALL"], False, "--cap-add ALL gives the very same CapEff as --privileged: capabilities alone "
                                  "cannot tell. Which protections of --privileged are not capabilities?"),
    (["--cap-add", "SYS_ADMIN"], False, "SYS_ADMIN lets it mount, but /sys and /proc are as in any container"),
    (["--device", "/dev/loop-control"], False, "--device gives one host device (and its cgroup rule) by name: "
                                               "a node in /dev alone does not make a container privileged"),
    (["--privileged"], True, "--privileged: look at the mounts of /sys and of the masked paths"),
    (["--privileged", "--cap-drop", "ALL"], True, "Docker ignores --cap-drop with --privileged: still privileged"),
    (["--privileged", "--net", "host", "--pid", "host"], True, "--privileged with the host's network and PIDs"),
]


def _flags_text(flags):
    return " ".join(flags) or "(no flags)"


def _inside_files(flags):
    """/proc/self/status and /proc/self/mountinfo of a shell in a container made with ``flags``."""
    r = notebook.labtool("run", "--rm", *flags, "busybox", "sh", "-c",
                         "cat /proc/self/status; echo =====; cat /proc/self/mountinfo", quiet=True, timeout=30)
    if r.code != 0:
        raise RuntimeError(f"the check could not run its container ({_flags_text(flags)}): {_last_error(r)}")
    status, _, mountinfo = r.out.partition("=====\n")
    return status, mountinfo


def privileged_from_files(func):
    """Exercise "judge from /proc": ``func(status, mountinfo)`` gets the text of /proc/self/status and
    /proc/self/mountinfo as a process inside a container reads them, and says whether the container
    is privileged. The check reads both files in seven real containers."""
    if not callable(func):
        _fail(f"{func!r} is not a function", "define it with def is_privileged(status, mountinfo): ...")
    for flags, truth, hint in PRIVILEGE_CASES:
        status, mountinfo = _inside_files(flags)
        try:
            answer = func(status, mountinfo)
        except Exception as e:
            _fail(f"with {_flags_text(flags)} your function raised {type(e).__name__}: {e}",
                  "status has lines like 'CapEff:\\t000001fffeffffff'; mountinfo one mount per line, "
                  "the mount point in the 5th field and its options in the 6th")
        if not isinstance(answer, bool):
            _fail(f"with {_flags_text(flags)} your function returned {answer!r}", "return True or False")
        if answer != truth:
            _fail(f"{_flags_text(flags)}: you say {'privileged' if answer else 'not privileged'}, "
                  f"it is {'privileged' if truth else 'not privileged'}", hint)
    _ok(f"Your function tells the {sum(t for _, t, _ in PRIVILEGE_CASES)} privileged containers from the "
        f"{sum(not t for _, t, _ in PRIVILEGE_CASES)} others, --cap-add ALL and --device included: correct")


def privileged_test(command):
    """Exercise "a test inside": ``command``, a busybox shell command run inside the container, exits 0
    in a privileged container and non-zero in any other."""
    if not isinstance(command, str) or not command.strip():
        _fail(f"{command!r} is not a shell command", "a string, like \"grep -q something /proc/self/status\"")
    for flags, truth, hint in PRIVILEGE_CASES:
        r = notebook.labtool("run", "--rm", *flags, "busybox", "sh", "-c", command, quiet=True, timeout=30)
        if r.code == 125 and r.err.startswith("labtool:"):
            raise RuntimeError(f"the check could not run its container ({_flags_text(flags)}): {_last_error(r)}")
        if (r.code == 0) != truth:
            _fail(f"{_flags_text(flags)}: your command exits {r.code}, so it says "
                  f"{'privileged' if r.code == 0 else 'not privileged'}; it is "
                  f"{'privileged' if truth else 'not privileged'}", hint)
    _ok(f"Your command, run inside, knows whether its container is privileged in all {len(PRIVILEGE_CASES)} "
        "cases: correct")


GOD_MODE_TASK = "mke2fs {disk} >/dev/null 2>&1 && mkdir -p /mnt/d && mount {disk} /mnt/d && " \
                "echo written > /mnt/d/proof && umount /mnt/d"


def least_privilege(flags):
    """Exercise "less than --privileged": with ``flags`` (no --privileged; the word DISK stands for the
    scratch disk's /dev/loopN) a container formats and mounts a scratch disk (GOD_MODE_TASK), and holds
    no capability beyond Docker's 14 and the ones the task needs."""
    from labtool import privileged

    words = _flags(flags, "--cap-add SYS_ADMIN --device DISK")
    if "--privileged" in words:
        _fail("your flags say --privileged", "the point is to do without it: which capability does mount need, "
                                             "and how does a container get one host device?")
    scratch = os.path.join(os.environ.get("LABTOOL_ROOT", "/tmp"), f"least-privilege-{os.getpid()}.img")
    with privileged.scratch_disk(scratch) as disk:
        given = [disk if w == "DISK" else w for w in words]
        task = GOD_MODE_TASK.format(disk=disk)
        r = notebook.labtool("run", "--rm", *given, "busybox", "sh", "-c",
                             f"{task} && sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status", quiet=True, timeout=30)
        if r.code != 0:
            _fail(f"with {' '.join(given)} the task fails: {_last_error(r)}",
                  "mke2fs needs the node (--device DISK), mount needs CAP_SYS_ADMIN; "
                  "try it in a cell and read the error")
    extra = set(capabilities.names_of(int(r.out.split()[-1], 16))) - set(
        capabilities.names_of(capabilities.mask_of(capabilities.DOCKER_DEFAULT + ["SYS_ADMIN"])))
    if extra:
        shown = ", ".join(sorted(extra)[:4]) + (f" ... {len(extra)} in all" if len(extra) > 4 else "")
        _fail(f"it works, with more than it needs: {shown}", "add the one capability mount needs, not ALL")
    _ok(f"{' '.join(words)}: one capability and one device, not every capability and every host device: "
        "least privilege, correct")
