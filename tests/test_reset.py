"""``labtool reset`` and the host-state guard the whole suite relies on."""

import os
import subprocess
import sys
import time

from conftest import REPO, host_state, host_state_diff
from labtool import syscalls


def test_guard_sees_a_leftover_mount_and_reset_removes_it(tmp_path):
    root = tmp_path / "root"
    env = dict(os.environ, LABTOOL_ROOT=str(root))
    leftover = root / "lib" / "containers" / "x" / "proc"
    leftover.mkdir(parents=True)
    before = host_state()
    syscalls.mount("proc", str(leftover), "proc")            # what a crashed run could leave
    try:
        problems = host_state_diff(before, host_state())
        assert problems and "mounts changed" in problems[0] and str(leftover) in problems[0]
    finally:
        p = subprocess.run([sys.executable, "-m", "labtool", "reset"], capture_output=True, text=True,
                           cwd=REPO, env=env)
    assert "unmounted 1 mount(s)" in p.stdout
    assert not (root / "lib" / "containers").exists()
    assert host_state_diff(before, host_state()) == []


def test_reset_removes_what_a_deleted_root_left(tmp_path):
    """A root deleted without reset leaves its default bridge and chains; any reset finds them
    by the tag in their names (labtool/network/naming.py) and removes them."""
    import shutil

    from labtool.network import naming

    gone, other = tmp_path / "gone", tmp_path / "other"
    labtool = lambda root, *args: subprocess.run([sys.executable, "-m", "labtool", *args],  # noqa: E731
                                                 capture_output=True, text=True, cwd=REPO,
                                                 env=dict(os.environ, LABTOOL_ROOT=str(root)))
    assert labtool(gone, "run", "--rm", "busybox", "true").returncode == 0
    bridge = f"lt{naming.root_tag6(str(gone))[:4]}0"
    assert bridge in os.listdir("/sys/class/net")
    labtool(gone, "system", "stop-daemon")
    shutil.rmtree(gone)
    p = labtool(other, "reset")
    assert f"of {gone}, a labtool root that is gone: {bridge}" in p.stdout, p.stdout
    assert bridge not in os.listdir("/sys/class/net")
    assert naming.root_tag6(str(gone)) not in naming.recorded_roots()


def test_reset_on_a_clean_root_removes_nothing(tmp_path):
    env = dict(os.environ, LABTOOL_ROOT=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "labtool", "reset"], capture_output=True, text=True,
                       cwd=REPO, env=env)
    assert p.returncode == 0 and p.stdout == "nothing to remove\n"


def test_guard_sees_a_changed_hostname_and_a_stray_process():
    before = {"hostname": "a", "processes": {(1, "init")}}
    after = {"hostname": "b", "processes": {(1, "init"), (42, "python -m labtool run")}}
    problems = host_state_diff(before, after)
    assert any("hostname" in p for p in problems)
    assert any("42" in p for p in problems)


def test_guard_sees_a_labtool_process_a_test_left_on_another_root():
    """A labtool daemon a test started on the default root (or any other) is this run's
    leftover: everything the tests start inherits LABTOOL_TEST_RUN (conftest.py)."""
    before = host_state()
    env = dict(os.environ, LABTOOL_ROOT="/nonexistent/another-root")
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "labtool"], env=env)
    try:
        time.sleep(0.2)
        problems = host_state_diff(before, host_state())
        assert any("processes left running" in problem and str(p.pid) in problem for problem in problems)
    finally:
        p.kill()
        p.wait()
    assert host_state_diff(before, host_state()) == []
