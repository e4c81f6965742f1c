"""The ``labtool`` command: a thin client that hands each command to the labtool daemon.

It is how the docker CLI talks to dockerd: the command you type is a small program that
sends your request over a unix socket (``/run/labtool/labtoold.sock``) to a long-lived
daemon that has everything loaded already (``engine/daemon.py``). The daemon forks a
worker, which runs the command with *your* stdin, stdout and stderr (the client passes
the three file descriptors along, SCM_RIGHTS in man 7 unix), in your directory, with
your environment; the client relays your signals (Ctrl-C) to it and exits with its code.

Why: a Python program that imports a container runtime takes tens of milliseconds just
to start; forking a warm one takes one. So this module imports as little as it can: not
even ``os``, ``socket``, ``signal`` or ``json`` (with the ``enum``, ``selectors`` and ``re``
they pull in, 14 ms on the lab's machine: more than runc needs for a whole container), but
their C cores ``posix``, ``_socket`` and ``_signal``; the request is plain NUL-separated
bytes; and once the answer is in, the client leaves with ``_exit`` (an interpreter's orderly
shutdown costs a few more ms, and a client has nothing to clean up).

The ``labtool`` command that ``make lab`` installs (/usr/local/bin/labtool, written by
vagrant/provision.sh from ``LAUNCHER``) starts Python with ``-I -S``: no site-packages
scanned, no ``.pth`` files run (3 ms saved); the command finds this package by its path, and
``in_process`` turns the site-packages on when the command runs here after all.

The daemon is the default, as in Docker; ``LABTOOL_DAEMON=0`` opts out (then a
container is a child of the ``labtool run`` that started it, as notebook 02 shows). When
there is no point or no way to use the daemon (not root, ``reset`` and ``system``, which
manage the daemon itself, a daemon that cannot be started or reached, or one that runs
other code than ours), the command runs in this process (``labtool.cli.main``).
"""

import sys

import _signal
import _socket
import posix                      # what ``os`` is made of, on Linux: os.fork is posix.fork

IN_PROCESS = {"reset", "system", "notebooks"}
# The installed ``labtool`` command: {python} the venv's, {repo} the checkout (provision.sh).
LAUNCHER = """#!{python} -IS
import sys
sys.path.insert(0, {repo!r})
from labtool.client import main
main()
"""
RELAYED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGWINCH, _signal.SIGUSR1,
           _signal.SIGUSR2)
REQUEST = b"labtool-request-1"         # the first field of a request: its format's name


def run_dir():
    """``labtool.paths.run_dir()``, repeated here: importing ``paths`` costs a millisecond."""
    root = posix.environ.get(b"LABTOOL_ROOT")
    return root.decode() + "/run" if root else "/run/labtool"


def socket_path():
    return run_dir() + "/labtoold.sock"


def package_dir():
    """This package's directory, as an absolute path without "." or ".." (os.path.abspath)."""
    path = __file__ if __file__.startswith("/") else posix.getcwd() + "/" + __file__
    parts = []
    for part in path.split("/")[:-1]:
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def main(argv=None):
    """Run one labtool command; ``argv`` None: this process *is* the command (sys.argv), and
    it ends with the command's exit code as soon as it is known."""
    if argv is not None:
        return run(argv)
    code = run(sys.argv[1:])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:                              # (a closed pipe: nothing more to say)
        pass
    posix._exit(code if isinstance(code, int) else 0)


def run(argv):
    """Through the daemon when it is asked for and can be had, else here; the exit code."""
    if posix.environ.get(b"LABTOOL_DAEMON") == b"0" or posix.geteuid() != 0 or not argv or argv[0] in IN_PROCESS:
        return in_process(argv)
    conn = connect()
    if conn is None:
        return in_process(argv)
    try:
        code = ask(conn, argv)
    except (ConnectionResetError, BrokenPipeError):   # the daemon was stopping: no matter
        code = None
    finally:
        conn.close()
    return in_process(argv) if code is None else code


def in_process(argv):
    if sys.flags.no_site:          # started lean (python -IS: see LAUNCHER): the venv's packages now
        import site

        site.main()
    from labtool.cli import main as cli_main

    return cli_main(argv)


def connect(start=True):
    """A connection to the daemon of this labtool root; start one if none answers."""
    for attempt in range(200):
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        try:
            conn.connect(socket_path())
            return conn
        except OSError:
            conn.close()
            if not start:
                return None
        if attempt == 0:
            if not start_daemon():
                return None
        import time

        time.sleep(0.01)
    return None


def start_daemon():
    """Start ``python -m labtool.engine.daemon`` in the background (it leaves our session)."""
    import os

    os.makedirs(run_dir(), mode=0o700, exist_ok=True)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return True
    try:
        os.setsid()                              # out of our session, then fork once more:
        if os.fork():                            # the daemon is not our child (nobody waits)
            os._exit(0)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        # this very package first on its path (``-m`` puts the current directory first), not
        # another checkout's: that daemon would answer "stale" to us every time
        os.chdir(os.path.dirname(package_dir()))
        os.execv(sys.executable, [sys.executable, "-m", "labtool.engine.daemon"])
    finally:
        os._exit(127)


def _bytes(text):
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")   # (os.fsencode)


def encode_request(argv, cwd, env, package):
    """One datagram: the format's name, the package, the directory, the number of
    arguments, the arguments, then KEY=VALUE for each environment variable, all
    separated by NUL (the one byte none of them can hold)."""
    fields = [REQUEST, _bytes(package), _bytes(cwd), b"%d" % len(argv)]
    fields += [_bytes(a) for a in argv]
    fields += [_bytes(k) + b"=" + _bytes(v) for k, v in env.items()]
    return b"\0".join(fields)


def decode_request(data):
    """The daemon's side of ``encode_request``: {"package", "cwd", "argv", "env"}, or None."""
    fields = [f.decode("utf-8", "surrogateescape") for f in data.split(b"\0")]
    if len(fields) < 4 or fields[0] != REQUEST.decode() or not fields[3].isdigit():
        return None
    count = int(fields[3])
    argv, env = fields[4:4 + count], fields[4 + count:]
    return {"package": fields[1], "cwd": fields[2], "argv": argv,
            "env": dict(item.split("=", 1) for item in env if "=" in item)}


def ask(conn, argv):
    """Send the request with our stdio; relay signals; return the worker's exit code (None:
    run the command here after all)."""
    request = encode_request(argv, posix.getcwdb(), posix.environ, package_dir())
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))     # an array of C ints
    conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    while True:
        reply = conn.recv(4096).decode()
        word, _, value = reply.partition(" ")
        if word == "pid":                        # from now on Ctrl-C and friends go to the worker
            relay_signals(int(value))
        elif word == "exit":
            return int(value)
        elif word == "stale":                    # the daemon runs other code than ours
            return None
        else:                                    # the daemon went away
            print("labtool: the labtool daemon ended without an answer", file=sys.stderr)
            return 125


def relay_signals(pid):
    """Like ``process.forward_signals``, with ``_signal`` (no ``signal`` module: see above)."""
    def relay(signum, _frame):
        try:
            posix.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in RELAYED:
        _signal.signal(sig, relay)
