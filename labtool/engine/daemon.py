"""The labtool daemon: a warm process that runs labtool commands for the client.

Like dockerd, it listens on a unix socket that only root may use
(``/run/labtool/labtoold.sock``). Each request goes to a *worker*: a fork of the daemon,
made ahead of time (a spare waits for the next request), with every module loaded and
the command-line parser built, so the command starts at once. The worker takes the
client's stdin, stdout and stderr, directory and environment, runs ``labtool.cli.main``,
tells the client its exit code and exits (the daemon would tell it too, from the exit
status). If the client disappears (killed), the daemon kills its worker: a ``labtool
run`` killed with -9 takes its container along, as without the daemon.

A detached container's supervisor (``run -d``, ``start``) is forked by the *zygote*, an
idle copy of the daemon, on the worker's request (a socket pair per worker): so all
supervisors share the same memory pages (copy-on-write), and an idle one costs little
(see ``start_zygote`` and engine/supervisor.py). ``gc.freeze()`` keeps the garbage
collector from touching (and so copying) those pages in the children.

Processes, as ``ps`` shows them (all ``python -m labtool.engine.daemon``): the daemon;
its children the zygote, a spare worker and a worker per running command. All of them
end with the daemon, which exits after ten idle minutes, at once when its socket goes
(its labtool root was removed), when its code changes on disk (it answers "stale" and
the client runs the command itself), and with ``labtool reset`` or ``labtool system
stop-daemon``.
"""

import fcntl
import gc
import os
import selectors
import signal
import socket
import sys
import time

from labtool import client, paths

IDLE_EXIT = 600.0
REPLIED = b"replied"        # a worker to the daemon: my client has its exit code


def code_files():
    """labtool's modules and the directories they are in (a new module changes its directory)."""
    found = []
    for dirpath, dirs, files in os.walk(client.package_dir()):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [dirpath] + [os.path.join(dirpath, name) for name in files if name.endswith(".py")]
    return found


def code_stamp(files=None):
    """Changes when any labtool module changes: a daemon must not run yesterday's code."""
    stamp = 0
    for path in files or code_files():
        try:
            stamp = max(stamp, os.stat(path).st_mtime_ns)
        except FileNotFoundError:
            stamp = -1                            # a module went away: that is a change too
    return stamp


def pid_path():
    return os.path.join(paths.run_dir(), "labtoold.pid")


IN_WORKER = False           # True in a worker: this process runs a client's command


def running_pid():
    """The pid of this root's daemon, or 0 when none runs."""
    try:
        with open(pid_path()) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"labtool.engine.daemon" in f.read().split(b"\0") else 0
    except (OSError, ValueError):
        return 0


def stop_running(timeout=5.0):
    """Stop this root's daemon, if one runs (``labtool reset``, ``system stop-daemon``);
    its zygote and spare worker end with it."""
    pid = running_pid()
    if not pid:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    return True


def serve():
    os.makedirs(paths.run_dir(), mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(paths.run_dir(), "labtoold.lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0                                  # another daemon serves this root already
    path = client.socket_path()
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o077)                   # the socket: root only, like docker.sock
    listener.bind(path)
    os.umask(old_umask)
    listener.listen(64)
    os.chdir("/")                                 # hold no directory (a test's root) in use
    with open(pid_path(), "w") as f:
        f.write(str(os.getpid()))
    _warm_up()
    zygote = start_zygote(listener, lock)
    # netlink for a container on a bridge (0.1 s to import), for the workers the daemon forks;
    # not in the zygote, whose forks (idle supervisors) need it only at their very end
    import pyroute2  # noqa: F401
    gc.freeze()
    Daemon(listener, path, lock, zygote).loop()
    return 0


def _warm_up():
    """Load what commands need, once, before any fork (then every worker has it)."""
    from labtool import cgroups, changes, cli, info, runtime, volumes  # noqa: F401
    from labtool.engine import lifecycle, logs, names, ps, supervisor  # noqa: F401
    from labtool.network import etc  # noqa: F401 - /etc/hosts and friends, for every run
    from labtool.network import ipam, links, naming, ports, store  # noqa: F401 - a run on a bridge plans with them

    try:
        cgroups.backend()                         # imports this machine's cgroup backend
    except Exception:                             # noqa: BLE001 - a command will say what is wrong
        pass
    cli.PARSER = cli._parser()
    for argv in (["run", "--rm", "-d", "-e", "A=1", "busybox", "true"], ["ps", "-a"], ["logs", "x"]):
        cli.PARSER.parse_args(argv)               # argparse compiles its regular expressions once
    gc.freeze()


def start_zygote(listener, lock):
    """Fork the *zygote* (the name comes from Android, whose apps are forks of one warm
    process): a copy of the daemon, warm but idle, that forks the detached containers'
    supervisors. Why not the daemon itself: every page the daemon writes after a fork
    (and it keeps working: requests, workers) stops being shared with that fork, and
    becomes memory the fork alone holds. The zygote writes next to nothing between forks.
    It ends when the daemon closes its end of the socket. Returns (pid, socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    pid = os.fork()
    if pid:
        theirs.close()
        return pid, ours
    from labtool.engine import supervisor

    try:
        ours.close()
        listener.close()
        os.close(lock)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            message, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 1)
            if not message:
                break                             # the daemon is gone
            for fd in fds:
                os.set_inheritable(fd, False)     # never into the container (recv_fds drops flags)
            request = client.decode_request(message)
            if request and len(fds) == 1 and len(request["argv"]) == 1 and supervisor._detach() == 0:
                theirs.close()
                become_supervisor(request, fds[0])
            for fd in fds:
                os.close(fd)
    finally:
        os._exit(0)


def adopt_environment(env):
    """Make ``os.environ`` the client's ``env``, changing only what differs (most often
    nothing): each setenv costs time, and in a supervisor, memory of its own."""
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def become_supervisor(request, report_fd):
    """In a fork of the daemon or the zygote: supervise the container the request names."""
    from labtool.engine import supervisor

    try:
        os.chdir(request["cwd"])
        adopt_environment(request["env"])         # the worker's (LABTOOL_STORAGE=vfs, ...)
    except BaseException as e:                    # noqa: BLE001 - the worker says why
        os.write(report_fd, f"err 125 {e}".encode())
        os._exit(125)
    supervisor.supervise(request["argv"][0], report_fd)


def _rehearse():
    """In a spare worker, while it waits: parse a typical command and plan its container,
    and read what making it reads, writing nothing anywhere. The memory pages this touches
    are copied now (copy-on-write: 3 to 4 us each on the lab's VM, bench/cow.py; a ``run``
    touches some 300 before its fork), not while a command waits. Only reads that take the
    same time however many containers and images there are: a command that comes meanwhile
    waits for the rehearsal to end."""
    import json

    from labtool import capabilities, cgroups, cli, images, namespaces, network, runtime
    from labtool.engine import names

    try:
        spec = cli._spec(cli.PARSER.parse_args(["run", "--rm", "-e", "A=1", "busybox", "true"]))
        runtime.active_steps(spec.upto)
        namespaces.plan(spec, lambda name, kind: 0)
        capabilities.plan(spec.capabilities)
        names.generate(set())
        json.dumps(spec, default=vars)
        cgroups.backend().cgroup("0" * 64)
        image = images.store.find(spec.image)
        if image is not None:
            network.plan(spec, image)
            runtime.environment(image, spec.process.env, "0" * 12, "", ())
            runtime.command_of(spec, image)
    except Exception:                             # noqa: BLE001 - only a rehearsal
        pass


def _let_go_of_stdio():
    """In a worker, done with the command: close our copies of the client's stdin, stdout
    and stderr (/dev/null in their place). Whoever reads the client's output (a pipe: a
    script, the test suite) sees its end now, not when the worker has finished what could wait."""
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _after_reply():
    """In a worker, once the client has its exit code: the work that could wait."""
    from labtool import runtime

    for work in runtime.after_reply or ():
        try:
            work()
        except Exception:                         # noqa: BLE001 - reset removes what is left
            pass


def _tell(conn, message):
    """Send a client one message; a client that is gone is no error (it was killed, or it
    has its exit code already)."""
    try:
        conn.send(message)
    except OSError:
        pass


class Daemon:
    def __init__(self, listener, path, lock, zygote=(0, None)):
        self.listener = listener
        self.path = path
        self.lock = lock                          # our flock on labtoold.lock: one daemon per root
        self.zygote_pid, self.zygote = zygote     # (see start_zygote)
        self.files = code_files()
        self.stamp = code_stamp(self.files)
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", None))
        self.workers = {}                         # pidfd -> (pid, client connection, spawn channel)
        self.replied = set()                      # pidfds of workers that told their client the exit code
        self.spare = None                         # a worker forked ahead: (pid, hand-over socket, channel)
        self.last_activity = time.monotonic()
        self.stopping = False
        self.inode = os.stat(path).st_ino

    def loop(self):
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.spare = self.fork_spare()
        while not (self.stopping and not self.workers):
            events = self.sel.select(timeout=1)
            if not events:
                self.replenish()                  # a long command (run -it) has not replied yet
            for key, _ in events:
                if self.sel.get_map().get(key.fd) is not key:
                    continue                      # gone with an earlier event of this round
                kind, data = key.data
                if kind == "accept":
                    self.accept()
                elif kind == "exit":
                    self.reap(key.fd)
                elif kind == "client":
                    self.client_gone(data)
                elif kind == "spawn":
                    self.spawn_supervisor(key.fileobj, data)
            if not self.workers and time.monotonic() - self.last_activity > IDLE_EXIT:
                self.stop()
            elif not self.stopping and not self.socket_is_ours():
                self.stop()                       # our root was removed (a test's, a tmp one)
        self.close()

    def socket_is_ours(self):
        """Our socket still has its name: gone with the labtool root (``rm -rf``), or a
        name another daemon took, means no client can reach us any more."""
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def stop(self):
        """No new clients (the socket's name goes first), and those already waiting in the
        listen queue are told to run their command themselves."""
        if not self.stopping:
            self.stopping = True
            if self.socket_is_ours():
                os.unlink(self.path)
            self.sel.unregister(self.listener)
            self.listener.setblocking(False)
            while True:
                try:
                    conn, _ = self.listener.accept()
                except BlockingIOError:
                    break
                with conn:
                    try:
                        conn.send(b"stale")
                    except OSError:
                        pass
            self.listener.close()

    def close(self):
        if self.spare is not None:                # its end of the socket reads EOF: it exits
            pid, handover, channel = self.spare
            handover.close()
            channel.close()
            os.waitpid(pid, 0)
            self.spare = None
        if self.zygote is not None:               # the same
            self.zygote.close()
            os.waitpid(self.zygote_pid, 0)
            self.zygote = None
        try:
            with open(pid_path()) as f:
                ours = f.read() == str(os.getpid())
            if ours:                              # (not a newer daemon's)
                os.unlink(pid_path())
        except (FileNotFoundError, ValueError):
            pass

    def accept(self):
        conn, _ = self.listener.accept()
        self.last_activity = time.monotonic()
        try:
            message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        except OSError:
            conn.close()
            return
        request = client.decode_request(message)
        if request is None or len(fds) != 3:
            conn.close()
            for fd in fds:
                os.close(fd)
            return
        if request.get("package") != client.package_dir() or code_stamp(self.files) != self.stamp:
            _tell(conn, b"stale")
            conn.close()
            for fd in fds:
                os.close(fd)
            self.stop()                           # the next client starts a fresh daemon
            return
        try:
            pid, channel = self.hand_over(message, fds + [conn.fileno()])
        except OSError:
            _tell(conn, b"stale")                 # (the client runs the command itself)
            conn.close()
            return
        finally:
            for fd in fds:
                os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = (pid, conn, channel)
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", None))
        self.sel.register(conn, selectors.EVENT_READ, ("client", pidfd))
        self.sel.register(channel, selectors.EVENT_READ, ("spawn", pidfd))
        _tell(conn, f"pid {pid}".encode())       # (a quick command: the client may be gone)

    def fork_spare(self):
        """A worker forked ahead of time, waiting for the next command: forking the daemon
        takes a millisecond, better spent before the command comes. It takes the request
        and the client's stdio on its socket (or ends when that closes)."""
        handover, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        channel, channel_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            handover.close()
            channel.close()
            self.forget()
            _rehearse()
            try:
                message, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 4)
            except OSError:
                message, fds = b"", []
            theirs.close()
            request = client.decode_request(message) if message else None
            if request is None or len(fds) != 4:
                os._exit(0)                       # the daemon is gone
            self.become_worker(fds[:3], request, channel_theirs, socket.socket(fileno=fds[3]))
        theirs.close()
        channel_theirs.close()
        return pid, handover, channel

    def hand_over(self, message, fds):
        """Give the request to the spare worker: (its pid, its spawn channel)."""
        for _attempt in range(2):
            pid, handover, channel = self.spare or self.fork_spare()
            self.spare = None
            try:
                socket.send_fds(handover, [message], fds)
                return pid, channel
            except OSError:                       # it died meanwhile: another one
                channel.close()
                os.waitpid(pid, 0)
            finally:
                handover.close()
        raise OSError("labtool daemon: no worker takes the request")

    def forget(self):
        """In a fork of the daemon: let go of everything that is the daemon's own."""
        self.sel.close()
        self.listener.close()
        os.close(self.lock)                       # or a new daemon could never take it
        if self.zygote is not None:
            self.zygote.close()
        if self.spare is not None:
            self.spare[1].close()
            self.spare[2].close()
        for pidfd, (_, other, channel) in self.workers.items():
            os.close(pidfd)
            other.close()
            channel.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def become_worker(self, fds, request, channel, conn):
        """In a spare worker (``forget`` done): run the command with the client's stdio, and
        tell the client (``conn``) its exit code when done, as the daemon would after us:
        the client is gone a moment sooner."""
        global IN_WORKER
        code = 125
        IN_WORKER = True
        try:
            os.set_inheritable(conn.fileno(), False)
            from labtool import runtime
            from labtool.engine import supervisor

            runtime.after_reply = []              # (run --rm: the files go after the reply)
            supervisor.fork_from_daemon = lambda container_id, report_fd: socket.send_fds(
                channel, [client.encode_request([container_id], os.getcwd(), os.environ, client.package_dir())],
                [report_fd])
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            adopt_environment(request["env"])
            sys.argv = ["labtool", *request["argv"]]
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            from labtool import cli

            code = cli.main(request["argv"])
        except SystemExit as e:                   # argparse --help
            code = e.code if isinstance(e.code, int) else 0
        except BaseException as e:                # noqa: BLE001 - one line, never a traceback
            print(f"labtool: {type(e).__name__}: {e}", file=sys.stderr)
        finally:
            code = code if isinstance(code, int) else 125
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                _let_go_of_stdio()
                _tell(channel, REPLIED)           # first: see Daemon.client_gone
                conn.send(f"exit {code & 0xFF}".encode())
            except OSError:
                pass
            finally:
                _after_reply()
                os._exit(code)

    def reap(self, pidfd):
        pid, conn, channel = self.workers.pop(pidfd)
        self.replied.discard(pidfd)
        self.sel.unregister(pidfd)
        for sock in (conn, channel):
            if sock.fileno() in self.sel.get_map():
                self.sel.unregister(sock)
        channel.close()
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
        try:
            conn.send(f"exit {code}".encode())
        except OSError:
            pass
        conn.close()
        self.last_activity = time.monotonic()
        self.replenish()

    def replenish(self):
        """Fork the next spare worker, if there is none. Not the moment a worker takes a
        command: a fork of the daemon and the spare's rehearsal would compete for the CPUs
        with that command (two, on the lab's VM); once its client has the exit code, they
        are done long before the next command comes, unless commands come at once (then
        ``hand_over`` forks one on the spot)."""
        if self.spare is None and not self.stopping:
            self.spare = self.fork_spare()

    def client_gone(self, pidfd):
        """The client closed its end: it was killed (its command dies too), or it has the
        exit code from the worker, which then finishes what could wait (``_after_reply``).
        The worker says "replied" on its channel before it replies: so that message is
        there, or was read already, when the client can be gone for that reason."""
        pid, conn, channel = self.workers[pidfd]
        try:
            replied = pidfd in self.replied or channel.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT) == REPLIED
        except OSError:
            replied = False
        if not replied:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sel.unregister(conn)                 # (reap() comes when the worker is gone)

    def spawn_supervisor(self, channel, pidfd):
        """A worker's ``run -d`` or ``start`` needs a supervisor: fork it from here.

        Not from the worker: a fork shares its parent's memory pages until one side writes
        to them (copy-on-write), and a worker has written to many while it parsed the command
        and made the container; after it exits they would be the supervisor's own. Forked from
        the daemon, every supervisor shares the daemon's pages with all the others, and owns
        only what it writes itself (bench/scale.py measures it: PSS per supervisor)."""
        try:
            message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 1)
        except OSError:
            message, fds = b"", []
        for fd in fds:
            os.set_inheritable(fd, False)         # never into the container (recv_fds drops flags)
        if message == REPLIED:                    # (see client_gone)
            self.replied.add(pidfd)
            self.replenish()
            return
        request = client.decode_request(message) if message else None
        if request is None or len(fds) != 1 or len(request["argv"]) != 1:
            for fd in fds:
                os.close(fd)
            if not message:                       # the worker is gone (reap() closes the channel)
                self.sel.unregister(channel)
            return
        report_fd = fds[0]
        if self.zygote is not None:
            try:
                socket.send_fds(self.zygote, [message], [report_fd])
                os.close(report_fd)
                return
            except OSError:                       # the zygote is gone: fork it from here
                self.zygote.close()
                self.zygote = None
        from labtool.engine import supervisor

        if supervisor._detach() == 0:             # in the supervisor: a new session, no terminal
            self.forget()
            become_supervisor(request, report_fd)
        os.close(report_fd)


if __name__ == "__main__":
    from labtool.engine import daemon             # one copy of this module (IN_WORKER), not __main__'s

    sys.exit(daemon.serve())
