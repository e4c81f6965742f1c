"""The labtool daemon (LABTOOL_DAEMON=1): the same commands, run by forks of a warm process."""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO


def daemon_run(*args, **kw):
    env = dict(os.environ, LABTOOL_DAEMON="1")
    return subprocess.run([sys.executable, "-m", "labtool", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60, **kw)


def test_commands_run_through_the_daemon_with_our_stdio_and_exit_code(labtool_root):
    try:
        p = daemon_run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (p.stdout, p.stderr, p.returncode) == ("out\n", "err\n", 3)
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            daemon = int(f.read())
        env = dict(os.environ, LABTOOL_DAEMON="1", GREETING="hello")
        p = subprocess.run([sys.executable, "-m", "labtool", "run", "--rm", "-i", "-e", "GREETING", "busybox",
                            "sh", "-c", "cat; echo $GREETING"], input="from stdin\n", capture_output=True,
                           text=True, cwd=REPO, env=env, timeout=60)
        assert p.stdout == "from stdin\nhello\n"
        assert daemon_run("run", "--rm", "--bogus", "busybox").returncode == 125
        assert daemon_run("run", "--rm", "busybox", "nosuch").returncode == 127
        with open(f"/proc/{daemon}/cmdline") as f:
            assert "labtool.engine.daemon" in f.read()
    finally:
        daemon_run("system", "stop-daemon")


def test_a_killed_client_takes_its_container_along(labtool_root):
    env = dict(os.environ, LABTOOL_DAEMON="1")
    try:
        p = subprocess.Popen([sys.executable, "-m", "labtool", "run", "--rm", "--name", "dclient", "busybox",
                              "sleep", "30"], cwd=REPO, env=env)
        from labtool.engine import containers
        deadline = time.time() + 10
        pid = 0
        while not pid and time.time() < deadline:
            try:
                pid = containers.find("dclient").running_pid
            except Exception:
                pass
            time.sleep(0.05)
        assert pid
        p.send_signal(signal.SIGKILL)
        p.wait()
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        daemon_run("rm", "-f", "dclient")
        daemon_run("system", "stop-daemon")
