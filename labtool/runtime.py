"""The runtime: turn a ``ContainerSpec`` into a running process, one step at a time.

Read ``STEPS`` as the table of contents of the lab: each step is one notebook and one
module, and ``labtool run --upto STEP`` runs a container with the steps up to STEP only.

Every step module has the same small shape (each function is optional):

    prepare(c)    on the host, before the child exists   (copy the rootfs, make a cgroup)
    in_child(c)   in the child, before exec               (pivot_root, sethostname)
    teardown(c)   on the host, after the child is gone    (unmount, remove the cgroup)

The child itself is made by ``namespaces.fork_into``: a fork, in new namespaces when
step 02 is on. The parent waits for it and hands its exit code back.
"""

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field

from labtool import explain, images, mounts, namespaces, overlay, paths, rootfs
from labtool.errors import CommandNotExecutable, CommandNotFound, LabtoolError, UsageError
from labtool.spec import ContainerSpec


@dataclass
class Step:
    name: str
    module: object
    notebook: str


STEPS = [
    Step("chroot", rootfs, "01-chroot"),              # a root filesystem of its own
    Step("namespaces", namespaces, "02-namespaces"),  # its own PIDs, hostname, mounts, IPC, net
    # 03 cgroups: to come
    Step("overlay", overlay, "04-overlay"),           # image layers shared, changes on top
]
# Steps still to come, in the order their notebooks teach them.
PLANNED = ["cgroups", "network", "capabilities"]


def active_steps(upto):
    """The steps that run for ``--upto upto`` (``full``: all of them)."""
    names = [s.name for s in STEPS]
    if upto == "full":
        return list(STEPS)
    if upto in names:
        return STEPS[: names.index(upto) + 1]
    if upto in PLANNED:
        raise UsageError(f"step '{upto}' is not built yet; steps so far: {', '.join(names)}, full")
    raise UsageError(f"unknown step '{upto}' for --upto; choose from: {', '.join(names)}, full")


@dataclass
class Container:
    """One container while it is being made and run: the spec plus what the steps add."""

    spec: ContainerSpec
    image: images.store.Image
    id: str
    dir: str                          # /var/lib/labtool/containers/<id>
    rootfs: str                       # <dir>/rootfs
    steps: list
    namespaces: list = field(default_factory=list)
    storage: str = "vfs"              # "vfs": a copy of the image; "overlay": step 04
    hostname: str = ""
    pid: int = 0


def new_container(spec):
    """Make a container's directory and record its config; nothing runs yet."""
    steps = active_steps(spec.upto)
    names = [s.name for s in steps]
    if spec.hostname and "namespaces" not in names:
        raise UsageError("--hostname needs a UTS namespace (step 02, namespaces); "
                         "without one it would rename the host")
    image = images.find_or_make(spec.image)
    spec.id = spec.id or os.urandom(32).hex()
    c = Container(spec=spec, image=image, id=spec.id, dir=paths.container_dir(spec.id),
                  rootfs=os.path.join(paths.container_dir(spec.id), "rootfs"), steps=steps)
    if "overlay" in names:
        c.storage = "overlay"
    if "namespaces" in names:
        c.namespaces = namespaces.for_spec(spec)
        c.hostname = spec.hostname or c.id[:12]
    os.makedirs(c.dir)
    _write_json(c, "config.json", asdict(spec))
    return c


def _write_json(c, name, data):
    tmp = os.path.join(c.dir, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, os.path.join(c.dir, name))


def command_of(spec, image):
    """What to run: the command given, else the image's CMD; after the ENTRYPOINT if any."""
    return list(image.entrypoint) + (list(spec.process.args) or list(image.cmd))


def run(spec):
    """Create, start and wait for a container; return its exit code (like ``docker run``)."""
    explain.enabled = spec.explain
    c = new_container(spec)
    prepared = []
    started = time.time()
    code = None
    try:
        for step in c.steps:
            if hasattr(step.module, "prepare"):
                step.module.prepare(c)
            prepared.append(step)
        code = _start_and_wait(c)
    finally:
        for step in reversed(prepared):
            if hasattr(step.module, "teardown"):
                step.module.teardown(c)
        if spec.remove or code is None:       # --rm, or it never ran: leave nothing behind
            remove(c.dir)
        else:
            _write_json(c, "state.json", {"Status": "exited", "ExitCode": code,
                                          "StartedAt": started, "FinishedAt": time.time()})
    return code


def _start_and_wait(c):
    """Fork the child, run the in-child steps there, exec the command, wait for it."""
    argv = command_of(c.spec, c.image)
    if not argv:
        raise UsageError("no command given and the image has no CMD")
    env = list(c.image.env) + list(c.spec.process.env)
    env = dict(item.split("=", 1) for item in env if "=" in item)
    if c.hostname:
        env.setdefault("HOSTNAME", c.hostname)
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)   # closes by itself when exec succeeds
    pid = namespaces.fork_into(c.namespaces)
    if pid == 0:
        os.close(errors_r)
        _child(c, argv, env, errors_w)            # never returns
    os.close(errors_w)
    c.pid = pid
    _write_json(c, "state.json", {"Status": "running", "Pid": pid, "StartedAt": time.time()})
    _forward_signals(pid)
    _, status = os.waitpid(pid, 0)
    problem = os.read(errors_r, 4096).decode()
    os.close(errors_r)
    if problem:
        code, _, message = problem.partition(" ")
        raise {"126": CommandNotExecutable, "127": CommandNotFound}.get(code, LabtoolError)(message)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _child(c, argv, env, errors_w):
    """In the child: the in-child part of every step, then exec the container's command."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for step in c.steps:
            if hasattr(step.module, "in_child"):
                step.module.in_child(c)
        os.chdir(c.spec.process.cwd)
        path = _lookup(argv[0], env.get("PATH", ""))
        explain.say("exec", f"execve({path!r}, {argv!r})", "the container's command replaces labtool")
        os.execve(path, argv, env)
    except LabtoolError as e:
        os.write(errors_w, f"{e.exit_code} {e}".encode())
        os._exit(e.exit_code)
    except OSError as e:
        code = 126 if e.errno in (13, 8) else 125        # EACCES, ENOEXEC
        os.write(errors_w, f"{code} {argv[0]}: {e.strerror}".encode())
        os._exit(code)
    except BaseException as e:  # anything else: report it, never run the parent's code
        os.write(errors_w, f"125 {type(e).__name__}: {e}".encode())
        os._exit(125)


def _lookup(command, path):
    """Find ``command`` the way execvp(3) would, in the container's own PATH."""
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d or ".", command) for d in path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            if not os.access(candidate, os.X_OK):
                raise CommandNotExecutable(f'exec: "{command}": permission denied')
            return candidate
    if "/" in command:
        raise CommandNotFound(f'exec: "{command}": no such file or directory')
    raise CommandNotFound(f'exec: "{command}": executable file not found in $PATH')


def _forward_signals(pid):
    """Pass the signals a user sends labtool on to the container (like docker's sig-proxy)."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)


def remove(container_dir):
    """Delete a container's directory, after making sure nothing is mounted in it."""
    mounts.unmount_under(container_dir)
    if mounts.mounts_under(container_dir):
        raise LabtoolError(f"refusing to delete {container_dir}: something is still mounted in it")
    shutil.rmtree(container_dir, ignore_errors=True)
