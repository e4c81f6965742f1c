"""The ``labtool`` command: a thin client that hands each command to the labtool daemon.

It is how the docker CLI talks to dockerd: the command you type is a small program that
sends your request over a unix socket (``/run/labtool/labtoold.sock``) to a long-lived
daemon that has everything loaded already (``engine/daemon.py``). The daemon forks a
worker, which runs the command with *your* stdin, stdout and stderr (the client passes
the three file descriptors along, SCM_RIGHTS in man 7 unix), in your directory, with
your environment; the client relays your signals (Ctrl-C) to it and exits with its code.

Why: a Python program that imports a container runtime takes tens of milliseconds just
to start; forking a warm one takes one. This module imports as little as it can.

For now the daemon is opt-in: ``LABTOOL_DAEMON=1`` (the notebooks teach, and their
outputs show, that a container is a child of the ``labtool run`` that started it; that
lesson moves to the daemon when it becomes the default). Without it, or when there is
no point or no way to use the daemon (not root, ``reset`` and ``system``, which manage
the daemon itself, a daemon that cannot be started), the command runs in this process
(``labtool.cli.main``).
"""

import os
import signal
import socket
import sys

from labtool import paths, process

IN_PROCESS = {"reset", "system", "notebooks"}
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGUSR1,
           signal.SIGUSR2)


def socket_path():
    return os.path.join(paths.run_dir(), "labtoold.sock")


def package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if os.environ.get("LABTOOL_DAEMON") != "1" or os.geteuid() != 0 or not argv or argv[0] in IN_PROCESS:
        return in_process(argv)
    conn = connect()
    if conn is None:
        return in_process(argv)
    with conn:
        try:
            return ask(conn, argv)
        except (ConnectionResetError, BrokenPipeError):   # the daemon was stopping: no matter
            return in_process(argv)


def in_process(argv):
    from labtool.cli import main as cli_main

    return cli_main(argv)


def connect(start=True):
    """A connection to the daemon of this labtool root; start one if none answers."""
    for attempt in range(200):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
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
    os.makedirs(paths.run_dir(), mode=0o700, exist_ok=True)
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
        os.execv(sys.executable, [sys.executable, "-m", "labtool.engine.daemon"])
    finally:
        os._exit(127)


def ask(conn, argv):
    """Send the request with our stdio; relay signals; return the worker's exit code."""
    import json

    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "package": package_dir()}).encode()
    socket.send_fds(conn, [request], [0, 1, 2])
    while True:
        reply = conn.recv(4096).decode()
        word, _, value = reply.partition(" ")
        if word == "pid":                        # from now on Ctrl-C and friends go to the worker
            process.forward_signals(int(value), RELAYED)
        elif word == "exit":
            return int(value)
        elif word == "stale":                    # the daemon runs other code than ours
            return in_process(argv)
        else:                                    # the daemon went away
            print("labtool: the labtool daemon ended without an answer", file=sys.stderr)
            return 125
