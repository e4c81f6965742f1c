"""The runtime: turn a ``ContainerSpec`` into a running process, one step at a time.

Read ``STEPS`` as the table of contents of the lab: each step is one notebook and one
module, and ``labtool run --upto STEP`` runs a container with the steps up to STEP only.

Every step module has the same small shape (each function is optional):

    prepare(c)         on the host, before the child exists   (copy the rootfs, mount overlay)
    forked(c, pid)     on the host, while the child gets ready (make its cgroup)
    started(c, pid)    on the host, once the child is ready   (map its user ids, plug in its network)
    in_child(c)        in the child, before exec               (mount /proc, pivot_root)
    before_pivot_root(c)  in the child, called by rootfs.in_child (bind mounts of host paths)
    teardown(c)        on the host, after the child is gone    (unmount)

The child itself is made by ``namespaces.fork_into``: a fork, in new namespaces when
step 02 is on. While it makes them, the parent does the ``forked`` work (the two run at
once, on two CPUs); the child says "ready", waits until the parent's ``started`` work is
done, settles into its namespaces (``namespaces.settle``), runs the in-child work, and
execs the command; the very last thing before execve is ``capabilities.drop_privileges``
(step 06: everything before it, the mounts and pivot_root, still needs root's full power).
The parent waits for it and hands its exit code back.
"""

import _signal
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import termios
import time
from dataclasses import dataclass, field

from labtool import (capabilities, cgroups, explain, images, init, mounts, namespaces, network, overlay, paths,
                     privileged, process, rootfs)
from labtool.cgroups import devices
from labtool.engine import containers
from labtool.errors import CommandNotExecutable, CommandNotFound, LabtoolError, UsageError
from labtool.spec import ContainerSpec
from labtool.spec import from_dict as spec_from_dict


@dataclass
class Step:
    name: str
    module: object
    notebook: str


STEPS = [
    Step("chroot", rootfs, "01-chroot"),              # a root filesystem of its own
    Step("namespaces", namespaces, "02-namespaces"),  # its own PIDs, hostname, mounts, IPC, net
    Step("cgroups", cgroups, "03-cgroups"),           # its share of memory, CPU, processes, devices
    Step("overlay", overlay, "04-overlay"),           # image layers shared, changes on top
    Step("network", network, "05-networking"),        # a veth into a bridge, an address, published ports
    Step("capabilities", capabilities, "06-capabilities"),  # root's power, minus what a container need not do
    Step("privileged", privileged, "07-privileged"),  # --privileged: the protections above switched off
]
# Steps still to come, in the order their notebooks teach them.
PLANNED = []


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
    namespaces: dict = field(default_factory=dict)   # kind -> None (new) or a path to join
    storage: str = "vfs"              # "vfs": a copy of the image; "overlay": step 04
    mounts: list = field(default_factory=list)       # mounts.MountPoint: volumes, binds (step 04)
    hostname: str = ""
    pid: int = 0
    devices: list = field(default_factory=list)      # --device, parsed: cgroups.devices.Device
    cgroup: object = None             # step 03: a cgroups.v1.Cgroup or cgroups.v2.Cgroup
    oom_killed: bool = False          # step 03: the kernel's OOM killer ended a process
    stdio: tuple = (0, 1, 2)          # what the command gets as stdin, stdout, stderr
    prepared: list = field(default_factory=list)     # steps whose host work is done (to undo)
    errors_r: int = -1                # the child reports here why its command did not start
    exec_error: str = ""              # what it reported ("" once the exec worked)
    console_fd: int = -1              # -t: a unix socket on which the child sends its terminal
    console_size: tuple = (24, 80)    # -t: its rows and columns
    privileges: object = None         # step 06: a capabilities.Plan (None: root keeps everything)
    network: object = None            # step 05: a network.Plan (None: the step is off)
    privileged: bool = False          # step 07: --privileged; steps 01, 03 and 06 consult it


def new_container(spec):
    """Check the spec, make the container's directory and record its config."""
    if spec.name:
        containers.check_name_free(spec.name)
    spec.id = spec.id or os.urandom(32).hex()
    c = build(spec)
    os.makedirs(c.dir)
    containers.write_json(os.path.join(c.dir, "config.json"), spec)
    return c


def build(spec):
    """Check a spec and plan its container, without making anything on the host yet."""
    steps = active_steps(spec.upto)
    names = [s.name for s in steps]
    image = images.find_or_make(spec.image)
    # the image's WORKDIR and USER, unless -w / -u say otherwise (notebook 04b, Dockerfiles)
    settings = image.config.get("config") or {}
    spec.process.cwd = spec.process.cwd or settings.get("WorkingDir") or "/"
    spec.process.user = spec.process.user or settings.get("User") or ""
    c = Container(spec=spec, image=image, id=spec.id, dir=paths.container_dir(spec.id),
                  rootfs=os.path.join(paths.container_dir(spec.id), "rootfs"), steps=steps)
    if "namespaces" in names:
        c.namespaces = namespaces.plan(spec, _donor_pid)
    if spec.hostname and c.namespaces.get("uts", 0) is not None:
        raise UsageError("--hostname needs a UTS namespace of the container's own (step 02); "
                         "without one it would rename the host")
    if c.namespaces.get("user", 0) is None and "pid" not in c.namespaces:
        raise UsageError("--userns needs a PID namespace of its own: root of a user namespace "
                         "may not mount /proc for the host's processes (drop --pid host)")
    if spec.init and "pid" not in c.namespaces:
        raise UsageError("--init needs a PID namespace of the container's own (step 02)")
    if c.namespaces.get("user", 0) is None:
        _check_reachable_from_userns(paths.containers_dir())
    c.hostname = spec.hostname or (c.id[:12] if "uts" in c.namespaces else os.uname().nodename)
    if "overlay" in names:
        c.storage = "overlay"
    if "cgroups" in names:
        cgroups.check(spec.resources)
        c.devices = [devices.parse_device(d) for d in spec.resources.devices]
    elif spec.resources != type(spec.resources)():
        raise UsageError(f"resource limits need step 03 (cgroups); --upto {spec.upto} stops before it")
    if (spec.mounts or spec.read_only or spec.volumes_from) and "overlay" not in names:
        raise UsageError("volumes, bind mounts, --tmpfs and --read-only come with step 04: "
                         "use --upto overlay or later")
    mounts.check_spec(spec)
    if "network" in names:
        c.network = network.plan(spec, image)
    else:
        network.check_flags(spec)
    privileged.check(spec, names)
    c.privileged = spec.privileged
    if "capabilities" in names:
        c.privileges = capabilities.plan(spec.capabilities, privileged=c.privileged)
    elif spec.capabilities != type(spec.capabilities)():
        raise UsageError(f"--cap-add, --cap-drop and --security-opt come with step 06 (capabilities): "
                         f"--upto {spec.upto} stops before it")
    return c


def load(container_id):
    """The Container of an existing container directory (``labtool start``)."""
    with open(os.path.join(paths.container_dir(container_id), "config.json")) as f:
        spec = spec_from_dict(json.load(f))
    try:
        return build(spec)
    except images.ImageNotFound:
        # its image lost its name (rmi -f): the image itself stays while a container uses it
        made_from = overlay.storage_of(paths.container_dir(container_id)).get("Image")
        if not made_from:
            raise
        spec.image = made_from
        return build(spec)


def _donor_pid(name, kind):
    """The pid of running container ``name`` whose ``kind`` namespace a new one joins."""
    record, pid = containers.find_running(name)
    if kind == "ipc" and record.config.get("namespaces", {}).get("ipc") != "shareable":
        raise UsageError(f"cannot join the IPC namespace of {name}: it is private "
                         f"(start it with --ipc shareable)")
    return pid


def _check_reachable_from_userns(path):
    """Root of a user namespace is uid 100000 on the host: it must be able to walk to the
    container's files, so every directory on the way needs the "x" bit for others."""
    path = os.path.abspath(path)
    while True:
        if os.path.isdir(path) and not os.stat(path).st_mode & 0o001:
            raise UsageError(f"--userns: root of the user namespace (uid {namespaces.USERNS_BASE} outside) "
                             f"cannot enter {path}; allow it with: chmod o+x {path}")
        if path == "/":
            return
        path = os.path.dirname(path)


def command_of(spec, image):
    """What to run: the command given, else the image's CMD; after the ENTRYPOINT if any.

    ``--entrypoint`` replaces the image's ENTRYPOINT and, as in Docker, drops its CMD too.
    """
    if spec.entrypoint is not None:
        return list(spec.entrypoint) + list(spec.process.args)
    return list(image.entrypoint) + (list(spec.process.args) or list(image.cmd))


def environment(image, spec_env, hostname="", user="", links=()):
    """The image's ENV, then HOSTNAME and HOME, then --link's variables, then -e flags: later ones win."""
    from labtool.spec import DEFAULT_PATH

    env = {"PATH": DEFAULT_PATH}            # unless the image's ENV (or -e) says otherwise
    root = user.split(":")[0] in ("", "0", "root")
    home = [f"HOME={'/root' if root else '/'}"]     # (Docker takes it from /etc/passwd: root's is /root)
    spec_env = [item for item in spec_env if item != f"PATH={DEFAULT_PATH}"]   # the spec's default
    for item in (list(image.env) + ([f"HOSTNAME={hostname}"] if hostname else []) + home + list(links)
                 + list(spec_env)):
        key, _, value = item.partition("=")
        env[key] = value
    return env


def run(spec):
    """Create, start and wait for a container; return its exit code (like ``docker run``).

    The caller's stdin/stdout/stderr are attached; the output is also logged (see
    ``engine.supervisor``, which also applies the restart policy).
    """
    from labtool.engine import supervisor

    return supervisor.run_attached(spec)


def start(c, stdio=(0, 1, 2), sibling=False):
    """Prepare every step on the host and start the container's first process.

    ``stdio``: the three file descriptors the command gets as 0, 1 and 2. Returns the
    pid to wait for. If anything fails on the way, undo what was prepared and raise.
    ``sibling``: the first process is our parent's child, not ours (see ``fork_into``).
    """
    explain.enabled = c.spec.explain
    c.stdio = stdio
    c.prepared = []
    c.oom_killed = False
    try:
        for step in c.steps:
            if hasattr(step.module, "prepare"):
                step.module.prepare(c)
            c.prepared.append(step)
        return _fork_and_release(c, sibling)
    except BaseException:
        _teardown(c)
        raise


def recover(c):
    """The host work of every step of ``c`` (from ``load``), for a process that did not do it
    itself and is to undo it with ``finish``: a detached supervisor, whose short-lived starter
    prepared the steps (engine/supervisor.py). What a step keeps in ``c`` is found again."""
    c.prepared = list(c.steps)
    if any(step.module is cgroups for step in c.steps):
        c.cgroup = cgroups.find(c.id)


def finish(c, status):
    """After the first process is gone (``status`` from waitpid): undo the steps' host
    work and return the exit code, or raise the error that kept the command from starting."""
    try:
        if c.errors_r >= 0:
            wait_for_exec(c)
        return _outcome(status, c.exec_error)
    finally:
        _teardown(c)


def wait_for_exec(c):
    """Block until the container's command is exec'd, or has failed to be; return the
    child's report of what went wrong ("" when the exec worked). The error pipe is
    close-on-exec: it reaches end-of-file the moment the exec succeeds."""
    data = process.read_all(c.errors_r)
    c.errors_r = -1
    c.exec_error = data.decode()
    return c.exec_error


def _teardown(c):
    for step in reversed(c.prepared):
        if hasattr(step.module, "teardown"):
            step.module.teardown(c)
    c.prepared = []


def _fork_and_release(c, sibling=False):
    """Fork the child, do the host-side work it waits for, let it go; return its pid."""
    argv = command_of(c.spec, c.image)
    if not argv:
        raise UsageError("no command given and the image has no CMD")
    env = environment(c.image, c.spec.process.env, c.hostname, c.spec.process.user,
                      c.network.env if c.network else ())
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)   # closes by itself when exec succeeds
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe()
    handled = _handled_signals()
    pid = namespaces.fork_into(c.namespaces, sibling)
    if pid == 0:
        for fd in (errors_r, ready_r, go_w):
            os.close(fd)
        _child(c, argv, env, errors_w, ready_w, go_r, handled)   # never returns
    for fd in (errors_w, ready_w, go_r):
        os.close(fd)
    c.pid, c.errors_r = pid, errors_r
    process.forward_signals(pid)   # like docker's sig-proxy
    try:
        for step in c.steps:                    # meanwhile, the child makes its namespaces
            if hasattr(step.module, "forked"):
                step.module.forked(c, pid)
        if os.read(ready_r, 1):                 # empty: the child died before it was ready
            for step in c.steps:
                if hasattr(step.module, "started"):
                    step.module.started(c, pid)
            os.write(go_w, b"g")
            # The child may report that PID 1 is a process of its own (see namespaces.settle)
            pid_1 = int(os.read(ready_r, 32) or pid)
            containers.update_state(c.id, Status="running", Pid=pid_1, StartedAt=time.time(),
                                    PidStartTime=containers.pid_start_time(pid_1), ExitCode=0,
                                    OOMKilled=False, Error="")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        if sibling:                             # our parent's child: it reaps it; we wait
            pidfd = os.pidfd_open(pid)          # until it has ended (a pidfd polls readable)
            try:
                select.select([pidfd], [], [], 5)
            finally:
                os.close(pidfd)
        else:
            os.waitpid(pid, 0)
        raise
    finally:
        os.close(go_w)                          # on failure: the child reads EOF and gives up
        os.close(ready_r)
    return pid


def _outcome(status, problem):
    """The command's exit code; or, if it never started, the error its child reported."""
    if problem:
        code, _, message = problem.partition(" ")
        raise {"126": CommandNotExecutable, "127": CommandNotFound}.get(code, LabtoolError)(message)
    return process.exit_code(status)


def _child(c, argv, env, errors_w, ready_w, go_r, handled):
    """In the child: wait for the parent, do every step's in-child work, exec the command."""
    try:
        _default_signals(handled)
        _take_stdio(c)
        os.write(ready_w, b"r")
        if os.read(go_r, 1) != b"g":
            os._exit(125)                       # the parent failed; it reports why
        os.close(go_r)
        cgroups.enter(c)                        # step 03: into its cgroup, unless the parent did it
        namespaces.settle(c, ready_w)           # first: everything else happens inside them
        os.close(ready_w)
        for step in c.steps:
            if hasattr(step.module, "in_child"):
                step.module.in_child(c)
        if c.console_fd >= 0:
            _make_console(c)
        user = c.spec.process.user
        start = lambda: exec_command(argv, env, c.spec.process.cwd, user, errors_w, c.privileges)  # noqa: E731
        if c.spec.init:
            explain.say("init", "fork; PID 1 stays to reap zombies and forward signals", "--init")
            init.run_as_init(start, then=lambda: _quietly(capabilities.drop_privileges, c.privileges, user))
        start()
    except BaseException as e:  # anything: report it, never run the parent's code
        _report(errors_w, e, argv)


def _quietly(function, *args):
    """--init's PID 1 drops to the command's user and capabilities too, without narrating it twice."""
    with explain.quiet():
        function(*args)


def _handled_signals():
    """The signals this process does not leave at their default action, as numbers: asked
    before a fork, so that the child only has to reset them (``_default_signals``)."""
    return [sig for sig in range(1, signal.NSIG) if sig not in (signal.SIGKILL, signal.SIGSTOP)
            and signal.getsignal(sig) not in (signal.SIG_DFL, None)]   # (None: glibc's own, 32 and 33)


def _default_signals(handled):
    """The command starts with every signal at its default action and none blocked: Python
    ignores SIGPIPE, a detached supervisor ignores SIGHUP, and an ignored signal stays
    ignored across execve (man 7 signal) - a shell could not even trap it. ``handled``: those
    not at their default (``_handled_signals``, asked by the parent).

    Why so frugal: a forked child shares its parent's memory until one of them writes to it;
    then the kernel copies the page (copy-on-write: 3 to 4 us a page on the lab's VM, see
    bench/cow.py), and a child of labtool copies some 630 before its execve. Looking at all
    64 signals here, through the ``signal`` module's enum wrappers, cost 90 copied pages;
    the C functions of ``_signal`` on the few that need it, a handful."""
    for sig in handled:
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def _take_stdio(c):
    """The command's stdin, stdout and stderr: what the supervisor handed over (pipes it
    logs, or a pseudo-terminal with -t, which becomes the controlling terminal)."""
    for target, fd in enumerate(c.stdio):
        if fd != target:
            os.dup2(fd, target)
    if c.spec.tty and c.console_fd < 0:
        _controlling_terminal()


def _controlling_terminal():
    os.setsid()                                  # a new session, led by the command...
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)         # ...with the pseudo-terminal as its terminal


def _make_console(c):
    _send_console(c.console_fd, c.console_size)


def terminal_size(fd=0):
    """(rows, columns) of the terminal on ``fd``, or 24 x 80 when it is not one."""
    try:
        size = os.get_terminal_size(fd)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def _send_console(console_fd, size=(24, 80)):
    """-t: a pseudo-terminal from the container's *own* /dev/pts (so that ``tty`` says
    /dev/pts/0 inside), its controlling end handed to the supervisor over a unix socket
    (SCM_RIGHTS, man 7 unix), as runc does with its --console-socket."""
    explain.say("chroot", "openpty() in the container's /dev/pts; send the master to the supervisor",
                "-t: a terminal of the container's own")
    master, slave = os.openpty()
    import struct

    # its size first: the command may ask for it (stty size) before the supervisor could set it
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    with socket.socket(fileno=console_fd) as sock:
        socket.send_fds(sock, [b"pty"], [master])
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    _controlling_terminal()


def exec_command(argv, env, cwd, user, errors_w, privileges=None):
    """The last moments before the container's command: user, directory, capabilities, execve."""
    try:
        capabilities.drop_privileges(privileges, user, cwd)
        path = _lookup(argv[0], env.get("PATH", ""))
        explain.say("exec", f"execve({path!r}, {argv!r})", "the container's command replaces labtool")
        try:
            os.execve(path, argv, env)
        except OSError as e:
            if e.errno in (13, 8):          # EACCES, ENOEXEC: it is there but cannot run
                raise CommandNotExecutable(f'exec: "{argv[0]}": {e.strerror.lower()}') from None
            raise
    except BaseException as e:
        _report(errors_w, e, argv)


def _report(errors_w, e, _argv=None):
    """Tell the parent what went wrong (through the error pipe) and exit like docker."""
    if isinstance(e, LabtoolError):
        code, message = e.exit_code, str(e)
    else:
        code, message = 125, f"{type(e).__name__}: {e}"
    try:
        os.write(errors_w, f"{code} {message}".encode())
    finally:
        os._exit(code)


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


def exec_in(name, argv, env=(), cwd="", user="", explain_it=False, interactive=False, tty=False, privileged=False):
    """``labtool exec``: run a command inside a running container (setns, then fork).

    Without ``interactive`` (-i) its stdin is /dev/null, as in Docker; with ``tty`` (-t) it
    gets a terminal from the container's /dev/pts, which we relay to ours.
    """
    explain.enabled = explain_it
    record, target = containers.find_running(name)
    spec = record.config
    image = images.store.find(spec["image"])
    full_env = environment(image, spec["process"]["env"], "") if image else {}
    full_env.update(item.partition("=")[::2] for item in env)
    errors_r, errors_w = os.pipe2(os.O_CLOEXEC)
    ours, theirs = socket.socketpair() if tty else (None, None)
    size = terminal_size(0)
    pid_ns = f"/proc/{target}/ns/pid"
    same_pid_ns = os.readlink(pid_ns) == os.readlink("/proc/self/ns/pid")
    steps = [s.name for s in active_steps(spec["upto"])]
    cgroup = cgroups.find(record.id) if "cgroups" in steps else None
    # the same capabilities as the container's command; every one with exec --privileged (as
    # docker exec: the container's device rules and mounts stay as they are)
    privileges = (capabilities.plan(spec_from_dict(spec).capabilities,
                                    privileged=privileged or spec.get("privileged", False))
                  if "capabilities" in steps else None)
    handled = _handled_signals()
    pid = namespaces.fork_into({} if same_pid_ns else {"pid": pid_ns})
    if pid == 0:
        try:
            os.close(errors_r)
            _default_signals(handled)
            if cgroup:
                cgroup.add(os.getpid())     # a pid of the container's PID namespace: ours now
            namespaces.join(target)                 # mnt last: we land in the container's root
            if not interactive:
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
            if tty:
                ours.close()
                _send_console(theirs.detach(), size)
            full_env.setdefault("HOSTNAME", os.uname().nodename)   # the container's, now
            exec_command(argv, full_env, cwd or spec["process"]["cwd"], user or spec["process"]["user"], errors_w,
                         privileges)
        except BaseException as e:
            _report(errors_w, e, argv)
    os.close(errors_w)
    process.forward_signals(pid)   # like docker's sig-proxy
    if tty:
        from labtool.engine import supervisor

        theirs.close()
        supervisor.relay_terminal(pid, ours, interactive)
    _, status = os.waitpid(pid, 0)
    problem = os.read(errors_r, 4096).decode()
    os.close(errors_r)
    return _outcome(status, problem)


# In a labtool daemon's worker (engine/daemon.py): a list of what may wait until the client
# has its exit code; the worker does it after its reply. None: do everything at once.
after_reply = None


def _delete(container_dir):
    """``rm -rf`` of a container's directory, after making sure nothing is mounted in it
    (rmtree would go down into a mount and delete what is *there*)."""
    if mounts.unmount_under(container_dir) and mounts.mounts_under(container_dir):
        raise LabtoolError(f"refusing to delete {container_dir}: something is still mounted in it")
    shutil.rmtree(container_dir, ignore_errors=True)


def _remove_after_reply(container_dir):
    """Take the container out of sight at once: ``rename(2)`` is atomic, so a ``ps -a`` or a
    ``run --name`` the moment after sees it gone and its name free; its files (a dozen
    directories, 2 ms) are deleted once the client has its exit code, and the check that
    nothing is mounted in them is done then too (a rename moves a mount below the directory
    along; it deletes nothing). What a killed worker left, ``labtool reset`` deletes."""
    trash = os.path.join(paths.removing_dir(), os.path.basename(container_dir))
    try:
        os.makedirs(paths.removing_dir(), mode=0o700, exist_ok=True)
        os.rename(container_dir, trash)
    except OSError:
        _delete(container_dir)
        return
    after_reply.append(lambda: _delete(trash))


def remove(container_dir, volumes=False):
    """Delete a container's directory, after making sure nothing is mounted in it; with
    ``volumes`` (``rm -v``, ``run --rm``) its anonymous volumes too, unless another
    container uses them."""
    used = containers.read_json(os.path.join(container_dir, "mounts.json")) or []
    if after_reply is None:
        _delete(container_dir)
    else:
        _remove_after_reply(container_dir)
    if volumes and any(m.get("Type") == "volume" for m in used):
        from labtool import volumes as volume_store

        volume_store.remove_anonymous(used)
