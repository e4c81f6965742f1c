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


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _state(labtool_root, container_id):
    import json

    with open(os.path.join(labtool_root, "lib", "containers", container_id, "state.json")) as f:
        return json.load(f)


def test_the_daemon_keeps_a_zygote_and_a_spare_worker_and_the_container_is_its_supervisors_child(labtool_root):
    cid = ""
    try:
        p = daemon_run("run", "-d", "busybox", "sleep", "30")
        assert p.returncode == 0, p.stderr
        cid = p.stdout.strip()
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            daemon = int(f.read())
        deadline = time.time() + 5                     # (the worker of run -d may still be ending)
        while True:
            children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _ppid_or_0(int(pid)) == daemon]
            if len(children) <= 2 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert len(children) == 2                      # while no command runs: the zygote, a spare worker
        state = _state(labtool_root, cid)
        supervisor, container = state["SupervisorPid"], state["Pid"]
        assert _ppid(container) == supervisor           # made by a starter, with clone(CLONE_PARENT)
        assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _ppid_or_0(int(pid)) == supervisor
                    and int(pid) != container]          # the starter is gone
    finally:
        if cid:
            assert daemon_run("rm", "-f", cid).returncode == 0
        daemon_run("system", "stop-daemon")
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)     # they end with the daemon


def _ppid_or_0(pid):
    try:
        return _ppid(pid)
    except (OSError, IndexError, ValueError):
        return 0


def test_a_request_is_encoded_and_decoded_whole():
    from labtool import client

    env = {"A": "1", "B": "x=y", "EMPTY": ""}
    data = client.encode_request(["run", "-e", "K=V", "busybox", "sh", "-c", "echo 'a b'"], "/tmp", env, "/pkg")
    assert client.decode_request(data) == {"package": "/pkg", "cwd": "/tmp", "env": env,
                                           "argv": ["run", "-e", "K=V", "busybox", "sh", "-c", "echo 'a b'"]}
    assert client.decode_request(b"something else") is None


def test_the_daemon_outlives_many_quick_commands(labtool_root):
    """The worker tells the client its exit code itself: the client's goodbye and the
    worker's exit often reach the daemon in the same round of events."""
    try:
        assert daemon_run("ps").returncode == 0
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            daemon = f.read()
        for _ in range(15):
            assert daemon_run("ps", "-a").returncode == 0
            assert daemon_run("run", "--rm", "busybox", "true").returncode == 0
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            assert f.read() == daemon
    finally:
        daemon_run("system", "stop-daemon")
