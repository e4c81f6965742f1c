"""The labtool daemon (the default; LABTOOL_DAEMON=0 opts out): the same commands, run by forks
of a warm process."""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO


def daemon_run(*args, **kw):
    env = {k: v for k, v in os.environ.items() if k != "LABTOOL_DAEMON"}          # the default
    return subprocess.run([sys.executable, "-m", "labtool", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=60, **kw)


def test_commands_run_through_the_daemon_with_our_stdio_and_exit_code(labtool_root):
    try:
        p = daemon_run("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (p.stdout, p.stderr, p.returncode) == ("out\n", "err\n", 3)
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            daemon = int(f.read())
        env = dict(os.environ, GREETING="hello")
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
    env = dict(os.environ)
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


def test_info_says_who_ran_the_command_and_labtool_daemon_0_opts_out(labtool_root):
    try:
        p = daemon_run("info")
        assert "Labtool Daemon: running, pid " in p.stdout and "ran in a worker forked from it" in p.stdout
        with open(os.path.join(labtool_root, "run", "labtoold.pid")) as f:
            daemon = int(f.read())
        env = dict(os.environ, LABTOOL_DAEMON="0")
        p = subprocess.run([sys.executable, "-m", "labtool", "run", "--rm", "busybox", "sh", "-c", "echo $PPID"],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
        assert p.stdout == "0\n"                      # (PID 1's parent is outside its namespace)
        p = subprocess.run([sys.executable, "-m", "labtool", "info"], capture_output=True, text=True, cwd=REPO,
                           env=env, timeout=60)
        assert f"Labtool Daemon: running, pid {daemon}; LABTOOL_DAEMON=0: this command ran in-process" in p.stdout
    finally:
        daemon_run("system", "stop-daemon")
    assert "Labtool Daemon: not running" in subprocess.run(
        [sys.executable, "-m", "labtool", "info"], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, LABTOOL_DAEMON="0"), timeout=60).stdout


def test_run_rm_is_gone_at_once_for_the_next_command(labtool_root):
    """The worker deletes a --rm container's files after its reply, but a rename took it out
    of sight before: ps -a does not list it, and its name is free."""
    try:
        for _ in range(3):
            p = daemon_run("run", "--rm", "--name", "once", "busybox", "true")
            assert p.returncode == 0, p.stderr
            assert "once" not in daemon_run("ps", "-a").stdout
        time.sleep(0.5)
        assert not os.listdir(os.path.join(labtool_root, "lib", "removing"))
    finally:
        daemon_run("system", "stop-daemon")


def test_a_daemon_ends_by_itself_when_its_labtool_root_is_removed(tmp_path):
    import shutil

    root = tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k != "LABTOOL_DAEMON"}
    env["LABTOOL_ROOT"] = str(root)
    p = subprocess.run([sys.executable, "-m", "labtool", "ps"], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    with open(root / "run" / "labtoold.pid") as f:
        daemon = int(f.read())
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _ppid_or_0(int(pid)) == daemon]
    assert children                                     # its zygote and spare worker
    shutil.rmtree(root)                                 # what a test or a tmp root does, without reset
    deadline = time.time() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in [daemon, *children]) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in [daemon, *children])
