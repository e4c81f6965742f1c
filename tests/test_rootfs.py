"""Step 01: the container's root filesystem, chroot and its escape, pivot_root."""

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture
def rootfs(tmp_path, run):
    """A private copy of the busybox image's files."""
    assert run("run", "--rm", "busybox", "true").returncode == 0   # makes the image if missing
    env = dict(os.environ)
    code = ("from labtool.images import store; from labtool import rootfs; "
            f"rootfs.copy_layers(store.find('busybox').layers, {str(tmp_path / 'rootfs')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
    return str(tmp_path / "rootfs")


def escape(rootfs, *flags):
    return subprocess.run([sys.executable, "-m", "labtool.rootfs", "escape", rootfs, *flags],
                          capture_output=True, text=True, cwd=REPO, timeout=30)


def test_a_root_process_escapes_a_chroot(rootfs):
    p = escape(rootfs)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ESCAPED" in p.stdout


def test_pivot_root_in_a_mount_namespace_stops_the_escape(rootfs):
    p = escape(rootfs, "--pivot-root")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "still inside" in p.stdout


def test_upto_chroot_sees_the_image_files_but_the_hosts_processes_and_name(run, tmp_path):
    marker = f"/labtool-test-marker-{os.getpid()}"
    open(marker, "w").close()
    try:
        p = run("run", "--rm", "--upto", "chroot", "busybox", "sh", "-c",
                f"ls {marker} 2>&1; hostname; ps -o pid,comm | wc -l; cat /proc/1/comm")
    finally:
        os.unlink(marker)
    lines = p.stdout.splitlines()
    assert p.returncode == 0, p.stderr
    assert "No such file" in lines[0]                 # the host's / is out of sight ...
    assert lines[1] == socket.gethostname()           # ... but its hostname is not
    assert int(lines[2]) > 10                         # nor are its processes
    with open("/proc/1/comm") as f:
        assert lines[3] == f.read().strip()           # PID 1 is the host's init


def test_full_run_has_its_own_root_pid_1_and_hostname(run):
    host = socket.gethostname()
    p = run("run", "--rm", "busybox", "sh", "-c", "hostname; echo $$; ps -o pid,comm | wc -l; ls /")
    out = p.stdout.splitlines()
    assert p.returncode == 0, p.stderr
    assert len(out[0]) == 12 and out[0] != host       # the first 12 digits of the id
    assert out[1] == "1"                              # the command is PID 1
    assert int(out[2]) == 4                           # header, sh, ps, wc: nothing of the host
    assert "bin" in out[3:] and "work" not in out[3:]
    assert socket.gethostname() == host


def test_container_sees_its_own_small_dev_and_read_only_sys(run):
    p = run("run", "--rm", "busybox", "sh", "-c",
            "ls /dev; touch /sys/x 2>&1; echo hi > /dev/null && echo null-ok; "
            "cat /etc/hostname; grep -c localhost /etc/hosts")
    assert p.returncode == 0, p.stderr
    devs = p.stdout.split()
    for name in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm"):
        assert name in devs
    assert not any(d.startswith(("sda", "vda", "nvme")) for d in devs)
    assert "Read-only file system" in p.stdout
    assert "null-ok" in p.stdout


def test_hostname_flag_applies_inside_only(run):
    host = socket.gethostname()
    p = run("run", "--rm", "--hostname", "busy", "busybox", "sh", "-c", "hostname; cat /etc/hostname")
    assert p.stdout.split() == ["busy", "busy"]
    assert socket.gethostname() == host


def test_hostname_without_a_uts_namespace_is_refused(run):
    host = socket.gethostname()
    p = run("run", "--rm", "--upto", "chroot", "--hostname", "oops", "busybox", "hostname")
    assert p.returncode == 125
    assert p.stderr.startswith("labtool: --hostname needs a UTS namespace")
    assert socket.gethostname() == host


def test_explain_narrates_the_kernel_actions(run):
    p = run("run", "--rm", "--explain", "busybox", "true")
    assert p.returncode == 0
    for action in ("unshare(CLONE_NEWPID)", "sethostname(", 'pivot_root(".", ".")',
                   'umount2(".", MNT_DETACH)', "execve("):
        assert action in p.stderr, action
    p = run("run", "--rm", "--explain", "--upto", "chroot", "busybox", "true")
    assert "chroot(" in p.stderr and "pivot_root" not in p.stderr and "unshare" not in p.stderr
