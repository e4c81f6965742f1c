"""Step 02: each namespace's isolation, as a learner would observe it."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, running_pid


def test_every_namespace_but_user_is_new(run):
    p = run("run", "--rm", "busybox", "sh", "-c", "for n in pid uts mnt ipc net cgroup user; do "
            "echo $n $(readlink /proc/self/ns/$n); done")
    inside = dict(line.split() for line in p.stdout.splitlines())
    for kind in ("uts", "mnt", "ipc", "net", "cgroup"):
        assert inside[kind] != os.readlink(f"/proc/self/ns/{kind}"), kind
    assert inside["user"] == os.readlink("/proc/self/ns/user")


def test_network_namespace_has_only_loopback_and_it_is_up(run):
    # --upto namespaces: the namespace as step 02 leaves it (step 05 plugs in an eth0)
    p = run("run", "--rm", "--upto", "namespaces", "busybox", "ip", "-o", "link")
    links = p.stdout.splitlines()
    assert len(links) == 1 and links[0].startswith("1: lo:") and "UP" in links[0]
    assert run("run", "--rm", "busybox", "ping", "-c", "1", "-W", "1", "127.0.0.1").returncode == 0


def test_network_host_and_container_modes(run, background):
    p = run("run", "--rm", "--network", "host", "busybox", "sh", "-c", "readlink /proc/self/ns/net; ls /sys/class/net")
    netns, *links = p.stdout.split()
    assert netns == os.readlink("/proc/self/ns/net")          # --network host: the host's own stack
    assert set(links) & set(os.listdir("/sys/class/net")) - {"lo"} or links == ["lo"]   # and its links
    pid = background("net-a")
    p = run("run", "--rm", "--net", "container:net-a", "busybox", "readlink", "/proc/self/ns/net")
    assert p.stdout.strip() == os.readlink(f"/proc/{pid}/ns/net")    # one stack, shared
    p = run("run", "--rm", "--net", "container:", "busybox", "true")
    assert p.returncode == 125 and p.stderr.startswith("labtool: invalid --network value 'container:'")


def test_a_mount_inside_is_invisible_outside(run):
    # mounting needs CAP_SYS_ADMIN, which a container's root no longer has (step 06): give it back
    p = run("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
            "mount -t tmpfs lab-secret /tmp && grep -c lab-secret /proc/mounts")
    assert p.stdout.strip() == "1"
    with open("/proc/self/mountinfo") as f:
        assert "lab-secret" not in f.read()


def test_cgroup_namespace_shows_root(run):
    p = run("run", "--rm", "busybox", "cat", "/proc/self/cgroup")
    assert all(line.endswith(":/") for line in p.stdout.splitlines()), p.stdout


def test_uts_host_shares_the_hostname_and_refuses_a_new_one(run):
    assert run("run", "--rm", "--uts", "host", "busybox", "hostname").stdout.strip() == socket.gethostname()
    p = run("run", "--rm", "--uts", "host", "--hostname", "x", "busybox", "true")
    assert p.returncode == 125 and "UTS namespace" in p.stderr
    assert socket.gethostname() != "x"


def test_pid_host_sees_host_processes(run):
    p = run("run", "--rm", "--pid", "host", "busybox", "sh", "-c", "echo $$; ps -o pid | wc -l")
    own_pid, count = p.stdout.split()
    assert own_pid != "1" and int(count) > 10


def test_ipc_private_vs_container_join(run, background):
    pid = background("ipc-a", "--ipc", "shareable")
    subprocess.run(["nsenter", f"--ipc=/proc/{pid}/ns/ipc", "ipcmk", "-M", "4096"], check=True, capture_output=True)
    count = lambda *flags: len(run("run", "--rm", *flags, "busybox", "cat", "/proc/sysvipc/shm").stdout.splitlines())  # noqa: E731
    assert count() == 1                                # just the header: nothing next door
    assert count("--ipc", "container:ipc-a") == 2      # the segment made in ipc-a
    p = run("run", "--rm", "--ipc", "container:nosuch", "busybox", "true")
    assert p.returncode == 125 and p.stderr == "labtool: No such container: nosuch\n"
    background("ipc-private")
    p = run("run", "--rm", "--ipc", "container:ipc-private", "busybox", "true")
    assert p.returncode == 125 and "it is private (start it with --ipc shareable)" in p.stderr


def test_bad_namespace_modes_are_one_clear_line(run):
    for flag, value in (("--ipc", "bogus"), ("--pid", "shareable"), ("--uts", "container:x")):
        p = run("run", "--rm", flag, value, "busybox", "true")
        assert p.returncode == 125, (flag, value)
        assert p.stderr.startswith(f"labtool: invalid {flag} value '{value}'"), p.stderr


def test_pid_container_and_exec_see_the_same_world(run, background):
    background("world", "--hostname", "inside")
    p = run("run", "--rm", "--pid", "container:world", "busybox", "cat", "/proc/1/cmdline")
    assert p.stdout.replace("\0", " ").strip() == "sleep 30"
    p = run("exec", "world", "sh", "-c", "hostname; echo $HOSTNAME; cat /proc/1/cmdline; echo; ls /")
    lines = p.stdout.splitlines()
    assert lines[:3] == ["inside", "inside", "sleep\x0030\x00"]
    assert "bin" in lines[3:] and "work" not in lines[3:]
    assert run("exec", "world", "sh", "-c", "exit 7").returncode == 7
    p = run("exec", "world", "nosuch")
    assert p.returncode == 127 and "executable file not found" in p.stderr


def test_exec_into_a_container_that_is_not_there(run):
    p = run("exec", "nosuch", "true")
    assert p.returncode == 125 and p.stderr == "labtool: No such container: nosuch\n"


def test_userns_root_inside_is_unprivileged_outside(run, background, labtool_root):
    p = run("run", "--rm", "--userns", "busybox", "sh", "-c",
            "id -u; cat /proc/self/uid_map; echo x > /etc/passwd 2>&1; touch /tmp/mine && ls -n /tmp/mine")
    lines = p.stdout.split("\n")
    assert lines[0] == "0"                                       # root inside ...
    assert lines[1].split() == ["0", "100000", "65536"]          # ... is 100000 outside
    assert "Permission denied" in p.stderr                       # the image's files are not its own
    assert lines[2].split()[2] == "0"                            # its own files are root's inside
    pid = background("userns", "--userns")
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["100000"] * 4                # seen from the host


def test_user_flag_drops_root(run):
    assert run("run", "--rm", "--user", "nobody", "busybox", "id", "-u").stdout == "65534\n"
    assert run("run", "--rm", "--user", "1000:1000", "busybox", "id").stdout == "uid=1000 gid=1000\n"
    p = run("run", "--rm", "--user", "nosuch", "busybox", "id")
    assert p.returncode == 125 and "unable to find user nosuch" in p.stderr


def _zombie_children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = f.read().split()
    states = []
    for child in children:
        try:
            with open(f"/proc/{child}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass
    return states.count("Z")


def test_init_reaps_zombies_and_forwards_signals(background):
    # An orphan is re-parented to PID 1. When PID 1 is `sleep`, nobody waits for it.
    orphan = ("sh", "-c", "(sleep 0.1 &); exec sleep 30")
    bare = background("no-init", command=orphan)
    with_init = background("with-init", "--init", command=orphan)
    time.sleep(0.8)
    assert _zombie_children(bare) == 1          # the dead orphan stays a zombie
    assert _zombie_children(with_init) == 0     # init reaped it


def _wait_for_command_under_init(root, name):
    """Until the init (PID 1) has forked the command and the command has exec'd."""
    deadline = time.time() + 10
    while time.time() < deadline:
        init = running_pid(root, name)
        try:
            with open(f"/proc/{init}/task/{init}/children") as f:
                child = f.read().split()[0]
            with open(f"/proc/{child}/cmdline") as f:
                if f.read().startswith("sleep"):
                    return
        except (OSError, IndexError):
            pass
        time.sleep(0.02)
    raise AssertionError("the init did not start its command")


def test_init_forwards_sigterm_which_a_bare_pid_1_ignores(labtool_root):
    p = subprocess.Popen([sys.executable, "-m", "labtool", "run", "--rm", "--name", "sigterm", "--init",
                          "busybox", "sleep", "30"], cwd=REPO)
    _wait_for_command_under_init(labtool_root, "sigterm")
    p.terminate()                               # labtool passes it on; init passes it on again
    assert p.wait(timeout=10) == 143            # 128 + SIGTERM


def test_userns_says_clearly_when_uid_100000_cannot_reach_the_root(tmp_path):
    env = dict(os.environ, LABTOOL_ROOT=str(tmp_path / "r"))     # tmp_path is 0700
    p = subprocess.run([sys.executable, "-m", "labtool", "run", "--rm", "--userns", "busybox", "true"],
                       capture_output=True, text=True, cwd=REPO, env=env)
    assert p.returncode == 125
    assert p.stderr.splitlines()[-1].startswith("labtool: --userns: root of the user namespace")
