"""The supervisor: the process that watches over one container (like conmon or containerd-shim).

Docker's daemon does not wait for each container itself: a small process per container
does. It holds the other end of the container's stdout and stderr and writes what comes
out to the log; it waits for the container's first process and records its exit code;
and it applies the restart policy. Because it is a process of its own, the ``docker``
command that started the container can exit: the container goes on.

labtool does the same. ``labtool run`` (attached) is itself the supervisor of its
container, and also copies the output to your terminal; ``labtool run -d`` and
``labtool start`` fork a supervisor that leaves your shell (``setsid``, a double fork)
and live until the container is done for good.

The restart policy (``--restart``), as Docker defines it:

    no               never restart (the default)
    on-failure[:N]   restart when the exit code is not 0 (at most N times)
    always           restart whatever the exit code
    unless-stopped   like always, but not after ``labtool stop`` (also not at boot)

A container stopped by hand (``stop``, ``kill``, ``rm -f``) is never restarted. Between
two restarts the supervisor waits, 100 ms doubling up to a minute, back to 100 ms
after a run of 10 s or more: a container that crashes at once does not eat the machine.
"""

import os
import selectors
import signal
import socket
import time

from labtool import paths, process, runtime
from labtool.engine import containers, logs
from labtool.errors import LabtoolError, UsageError

FIRST_DELAY, MAX_DELAY, GOOD_RUN = 0.1, 60.0, 10.0


def parse_policy(text):
    """``on-failure:3`` -> ("on-failure", 3); the others have no count (0)."""
    name, _, count = text.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or (count and name != "on-failure"):
        raise UsageError(f"invalid restart policy '{text}': use no, on-failure[:N], always or unless-stopped")
    if count and not (count.isdigit() and int(count) > 0):
        raise UsageError(f"invalid restart policy '{text}': the maximum retry count must be a positive number")
    return name, int(count or 0)


def should_restart(policy, code, restart_count, state):
    """Docker's rule: what the policy says, unless someone stopped or removes the container."""
    name, limit = parse_policy(policy)
    if state.get("StoppedByUser") or state.get("Status") == "removing":
        return False
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        return code != 0 and (limit == 0 or restart_count < limit)
    return False


class Supervisor:
    """Runs container ``c`` (a ``runtime.Container``), again and again if its policy says so.

    ``attached``: copy its output to our stdout/stderr too, and give it our stdin with -i
    (``labtool run`` without -d). ``report_fd``: where to say once that the first start
    worked ("ok") or not ("err CODE MESSAGE"), for ``run -d`` and ``start``, which wait for it.
    """

    def __init__(self, c, attached=False, report_fd=None):
        self.c = c
        self.attached = attached
        self.report_fd = report_fd
        self.error = None
        self.started = False
        self.console = None                          # -t: the socket the terminal comes on

    def run(self, recorded=False):
        """Supervise until the container is done for good; return its last exit code.
        ``recorded``: state.json names this process as the supervisor already."""
        c = self.c
        if not recorded:
            containers.update_state(c.id, **supervisor_fields())
        delay = FIRST_DELAY
        while True:
            began = time.monotonic()
            code = self.run_once()
            # a command that never started leaves the container "created", as in Docker; and
            # one that restarts goes straight to "restarting" (decided under the lock: a `stop`
            # at this very moment is either seen here or sees "restarting")
            status = "exited" if self.started else "created"
            if c.spec.remove and self.attached:
                break            # run --rm: the container goes now, and its caller gets the code from us

            def decide(state):
                if should_restart(c.spec.restart, code, state.get("RestartCount", 0), state):
                    return {"Status": "restarting", "RestartCount": state.get("RestartCount", 0) + 1}
                return {}
            state = containers.update_state(c.id, decide, Status=status, ExitCode=code, FinishedAt=time.time(),
                                            OOMKilled=c.oom_killed, Error=str(self.error or ""), Pid=0)
            if state.get("Status") != "restarting":
                break
            if self.attached:            # the caller gets its exit code; restarts go on detached
                if _detach() != 0:
                    return code
                self.attached = False
                containers.update_state(c.id, **supervisor_fields())
            delay = FIRST_DELAY if time.monotonic() - began >= GOOD_RUN else delay
            if not self._sleep(delay):
                break
            delay = min(delay * 2, MAX_DELAY)
        if c.spec.remove:
            runtime.remove(c.dir, volumes=True)
        return code

    def _sleep(self, seconds):
        """The back-off, cut short (False) if the container is stopped or removed meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = containers.load(self.c.id).state
            if not state or state.get("StoppedByUser") or state.get("Status") == "removing":
                if state:
                    containers.update_state(self.c.id, Status="exited")
                return False
            time.sleep(min(0.05, seconds))
        return True

    # --- one run of the container -------------------------------------------------------

    def run_once(self):
        """Start the container, copy its output until it ends, return its exit code."""
        c = self.c
        self.error = None
        self.started = False
        ours, theirs, stdin = self._stdio()
        try:
            pid = self._start(theirs)
        except LabtoolError as e:
            self._report(f"err {e.exit_code} {e}")
            self.error = e
            return e.exit_code
        finally:
            for fd in set(theirs) - {0, 1, 2}:
                os.close(fd)
            if c.console_fd >= 0:
                os.close(c.console_fd)
                c.console_fd = -1
        if self.console is not None:
            ours, stdin = self._receive_console(ours)
        log = logs.Writer(c.dir)
        problem = runtime.wait_for_exec(c) if c.errors_r >= 0 else c.exec_error
        if not problem:                         # "ok" only once the command really runs
            self._report("ok")
            self.started = True
        try:
            self._pump(pid, ours, stdin, log)
        finally:
            log.close()
            for fd in ours:
                os.close(fd)
        _, status = os.waitpid(pid, 0)
        done = c if self.attached else _for_teardown(c)    # (the starter prepared it)
        try:
            return runtime.finish(done, status)
        except LabtoolError as e:
            self._report(f"err {e.exit_code} {e}")
            self.error = e
            return e.exit_code
        finally:
            c.oom_killed = done.oom_killed

    def _start(self, stdio):
        """Start the container; its pid. ``labtool run`` (attached) does it itself. A detached
        supervisor lets a *starter* do it: a fork of itself that prepares every step, makes
        the container with clone(CLONE_PARENT), so that the container is the supervisor's
        child, not its own (``syscalls.fork_sibling``), waits for the command's execve and
        exits. Why: preparing the steps writes to many memory pages (a fork's pages are shared
        until written), and the supervisor idles for as long as its container runs; the
        starter's pages go with it (bench/scale.py: PSS per supervisor)."""
        if self.attached:
            return runtime.start(self.c, stdio)
        c = self.c
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        starter = os.fork()
        if starter == 0:
            os.close(report_r)
            try:
                full = runtime.load(c.id)              # (the supervisor keeps only a sketch)
                full.console_fd, full.console_size = c.console_fd, c.console_size
                pid = runtime.start(full, stdio, sibling=True)
                message = f"pid {pid} {runtime.wait_for_exec(full)}"
            except LabtoolError as e:
                message = f"err {e.exit_code} {e}"
            except BaseException as e:           # noqa: BLE001 - the supervisor says it
                message = f"err 125 {type(e).__name__}: {e}"
            os.write(report_w, message.encode())
            os._exit(0)
        os.close(report_w)
        answer = process.read_all(report_r)
        os.waitpid(starter, 0)
        word, _, rest = answer.decode().partition(" ")
        if word == "pid":
            pid, _, c.exec_error = rest.partition(" ")
            c.pid, c.errors_r = int(pid), -1
            process.forward_signals(c.pid)       # as runtime.start does: like docker's sig-proxy
            return c.pid
        _reap_strays()                           # a container killed half-made, if any
        code, _, message = rest.partition(" ")
        from labtool.errors import CommandNotExecutable, CommandNotFound

        error = {"126": CommandNotExecutable, "127": CommandNotFound}.get(code, LabtoolError)(
            message or "the container's starter ended without a word")
        error.exit_code = int(code) if code.isdigit() else 125
        raise error

    def _receive_console(self, ours):
        """The master end of the container's terminal, sent by the container (see runtime)."""
        with self.console as sock:
            _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        self.console = None
        if not fds:                                  # the child failed before: its error follows
            return ours, None
        master = fds[0]                          # (the container set its size already)
        return {master: "stdout"}, (master if (self.attached and self.c.spec.interactive) else None)

    def _stdio(self):
        """({our fd: stream name}, the container's (stdin, stdout, stderr), where our stdin goes)."""
        c = self.c
        if c.spec.tty and "mnt" in c.namespaces:
            # the container makes its terminal in its own /dev/pts and sends us the master
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            c.console_fd = theirs.detach()
            c.console_size = runtime.terminal_size(0) if self.attached else (24, 80)
            self.console = ours
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            return {}, (null, null, null), None
        if c.spec.tty:                                         # no mount namespace: a host terminal
            master, slave = os.openpty()
            _set_window_size(master, 0 if (self.attached and os.isatty(0)) else None)
            stdin = master if (self.attached and c.spec.interactive) else None
            return {master: "stdout"}, (slave, slave, slave), stdin
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        if self.attached and c.spec.interactive:
            child_stdin = 0                                    # ours, as it is
        else:
            child_stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        return {out_r: "stdout", err_r: "stderr"}, (child_stdin, out_w, err_w), None

    def _pump(self, pid, ours, stdin, log):
        """Copy the container's output to the log (and our terminal) until it exits."""
        sel = selectors.DefaultSelector()
        for fd, stream in ours.items():
            sel.register(fd, selectors.EVENT_READ, stream)
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ, "exit")
        raw = _RawTerminal() if (self.attached and self.c.spec.tty and os.isatty(0)) else None
        if raw and stdin is not None:        # our window resized: so is the container's terminal
            signal.signal(signal.SIGWINCH, lambda *_: _set_window_size(stdin, 0))
        if stdin is not None:
            sel.register(0, selectors.EVENT_READ, "stdin")
        try:
            open_fds = set(ours)
            while open_fds:
                for key, _ in sel.select():
                    if key.data == "exit":
                        sel.unregister(pidfd)
                        for fd in list(open_fds):       # what is still in the pipes, then stop
                            self._drain(fd, ours[fd], log)
                        open_fds.clear()
                    elif key.data == "stdin":
                        data = _read(0)
                        if data:
                            _write_all(stdin, data)
                        else:                       # our input ended: tell the terminal (^D)
                            sel.unregister(0)
                            if self.c.spec.tty:
                                _write_all(stdin, b"\x04")
                    elif key.fd in open_fds:
                        data = _read(key.fd)
                        if data:
                            self._emit(key.data, data, log)
                        else:
                            sel.unregister(key.fd)
                            open_fds.discard(key.fd)
        finally:
            if raw:
                raw.restore()
            os.close(pidfd)
            sel.close()

    def _drain(self, fd, stream, log):
        os.set_blocking(fd, False)
        while True:
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, OSError):    # nothing more (EAGAIN), or a pty's EIO
                return
            if not data:
                return
            self._emit(stream, data, log)

    def _emit(self, stream, data, log):
        log.write(stream, data)
        if self.attached:
            _write_all(1 if stream == "stdout" else 2, data)

    def _report(self, message):
        if self.report_fd is not None:
            os.write(self.report_fd, message.encode())
            os.close(self.report_fd)
            self.report_fd = None


def _for_teardown(sketch):
    """The container as its starter had it, for the supervisor to undo the steps' host work:
    loaded again (or the sketch, if that fails: its image is gone, say), with what the steps
    left on the host found again (``runtime.recover``)."""
    try:
        c = runtime.load(sketch.id)
    except Exception:                            # noqa: BLE001 - the sketch will do
        c = sketch
    c.pid, c.errors_r, c.exec_error = sketch.pid, -1, sketch.exec_error
    runtime.recover(c)
    return c


def _reap_strays():
    """Wait for children that have ended and that nobody waits for."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _read(fd):
    try:
        return os.read(fd, 65536)
    except OSError:              # a pty master reads EIO once the last slave is closed
        return b""


def _write_all(fd, data):
    while data:
        try:
            data = data[os.write(fd, data):]
        except BrokenPipeError:
            return


def _set_window_size(target, source=None):
    """Rows and columns of the container's terminal: those of ours, or 24 x 80."""
    import fcntl
    import struct
    import termios

    size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8) if source is not None else \
        struct.pack("HHHH", 24, 80, 0, 0)
    fcntl.ioctl(target, termios.TIOCSWINSZ, size)


class _RawTerminal:
    """Our terminal in raw mode while attached to a container's pseudo-terminal: every key,
    Ctrl-C and Ctrl-D included, goes to the container, whose own terminal interprets it."""

    def __init__(self):
        import termios
        import tty

        self.saved = termios.tcgetattr(0)
        tty.setraw(0)

    def restore(self):
        import termios

        termios.tcsetattr(0, termios.TCSADRAIN, self.saved)


def _detach():
    """Go on in the background (fork twice, new session, stdio on /dev/null).
    Returns 0 in the process that goes on, the child's pid in the caller."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return pid
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return 0


def relay_terminal(pid, console, interactive):
    """``exec -t``: receive the terminal the process made (on ``console``), then copy it to
    our stdout, and our stdin to it with -i, until the process ends."""
    with console:
        _, fds, _, _ = socket.recv_fds(console, 16, 1)
    if not fds:
        return                                   # it failed before: its error follows
    master = fds[0]
    raw = _RawTerminal() if (interactive and os.isatty(0)) else None
    sel = selectors.DefaultSelector()
    sel.register(master, selectors.EVENT_READ, "out")
    if interactive:
        sel.register(0, selectors.EVENT_READ, "in")
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    try:
        done = False
        while not done:
            for key, _ in sel.select():
                if key.data == "out":
                    data = _read(master)
                    if data:
                        _write_all(1, data)
                    else:
                        sel.unregister(master)
                elif key.data == "in":
                    data = _read(0)
                    if data:
                        _write_all(master, data)
                    else:
                        sel.unregister(0)
                        _write_all(master, b"\x04")
                else:
                    done = True
        os.set_blocking(master, False)
        while data := _read_nonblocking(master):
            _write_all(1, data)
    finally:
        if raw:
            raw.restore()
        sel.close()
        os.close(pidfd)
        os.close(master)


def _read_nonblocking(fd):
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, OSError):
        return b""


# --- the entry points ------------------------------------------------------------------

def supervisor_fields():
    """This process, as state.json names a container's supervisor."""
    return {"SupervisorPid": os.getpid(), "SupervisorStartTime": containers.pid_start_time(os.getpid())}


def run_attached(spec):
    """``labtool run`` without -d: create the container and supervise it from here."""
    from labtool.engine import lifecycle

    c = lifecycle.create(spec, **supervisor_fields())    # one write of state.json fewer
    return supervise_attached(c, recorded=True)


def supervise_attached(c, recorded=False):
    """Supervise container ``c`` from this process (``run`` without -d, ``start -a``): its
    exit code, or the error that kept its command from starting."""
    supervisor = Supervisor(c, attached=True)
    code = supervisor.run(recorded=recorded)
    if supervisor.error is not None and code in (125, 126, 127):
        raise supervisor.error            # "exec: ...: not found" and friends, as one line
    return code


# Set in the labtool daemon's workers (engine/daemon.py): ``fork_from_daemon(container_id,
# report_fd)`` asks the daemon to fork the supervisor, so that it shares the daemon's memory.
fork_from_daemon = None


def spawn(container_id):
    """Start a supervisor for an existing container in the background (``start``, ``run -d``);
    return once the container runs, or raise why it could not start."""
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    if fork_from_daemon is not None:
        fork_from_daemon(container_id, report_w)
    elif _detach() == 0:
        os.close(report_r)
        supervise(container_id, report_w)
    os.close(report_w)
    answer = process.read_all(report_r)
    word, _, rest = answer.decode().partition(" ")
    if word == "ok":
        return
    code, _, message = rest.partition(" ")
    from labtool.errors import CommandNotExecutable, CommandNotFound

    raise {"126": CommandNotExecutable, "127": CommandNotFound}.get(code, LabtoolError)(
        message or "the supervisor ended before the container started")


def sketch(container_id):
    """The container as an idle supervisor needs to know it: a ``runtime.Container`` made
    from its config.json alone. ``runtime.load`` would also find the image and plan the
    namespaces and capabilities, writing to many memory pages: the starter does that."""
    from labtool.spec import from_dict

    here = paths.container_dir(container_id)
    spec = from_dict(containers.read_json(os.path.join(here, "config.json")))
    steps = runtime.active_steps(spec.upto)
    new_mnt = {"mnt": None} if any(step.name == "namespaces" for step in steps) else {}
    return runtime.Container(spec=spec, image=None, id=container_id, dir=here, rootfs=os.path.join(here, "rootfs"),
                             steps=steps, namespaces=new_mnt)


def supervise(container_id, report_fd):
    """In a detached process: supervise the container until it is done for good, then exit.
    Whether it started goes to ``report_fd`` ("ok", or "err CODE MESSAGE")."""
    code = 125
    try:
        code = Supervisor(sketch(container_id), report_fd=report_fd).run()
    except BaseException as e:       # noqa: BLE001 - the caller learns it through the pipe
        try:
            os.write(report_fd, f"err 125 {e}".encode())
        except OSError:
            pass
    os._exit(code & 0xFF)

