"""Step 07: --privileged, and with --net host --pid host, as a process inside sees it.

Never changes the host: the probes only look, or act in the container's own namespaces (an
empty append to a /sys or /proc/sys file writes nothing); the loop device test formats a
scratch file of its own, and its loop device is detached whatever happens (the conftest
guard also compares the attached loop devices before and after the run).
"""

import json
import os
import subprocess

import pytest

from conftest import until
from labtool import cgroups, privileged
from labtool.capabilities import mask_of, read_sets

DEFAULT = 0x00000000A80425FB                 # Docker's 14 (FACTS.md)
HOST_BOUNDING = read_sets()["CapBnd"]        # this machine's: all but CAP_SYS_RESOURCE
NS_KINDS = ("pid", "uts", "mnt", "ipc", "net")


def host_has_links():
    """Links besides lo now (the test VM has lo only, until labtool's default bridge is made)."""
    return any(link != "lo" for link in os.listdir("/sys/class/net"))


def _expected(caps, devices, mount, host):
    """One column of the notebook's table, as it must read."""
    yes = lambda flag: "yes" if flag else "no"    # noqa: E731
    return {"caps": f"{caps:016x}", "loop_control": yes(devices), "disk_node": yes(devices),
            "open_device": yes(devices), "sys_writable": yes(devices), "masked": "visible" if devices else "masked",
            "proc_sys_writable": yes(devices), "mount": yes(mount), "host_processes": yes(host),
            "host_links": yes(host and host_has_links()), "netns": "host's" if host else "own"}


def expected(mode):
    """The column of ``mode``, computed when the test runs (the host's links may have changed)."""
    return {
        "default": _expected(DEFAULT, devices=False, mount=False, host=False),
        "--cap-add SYS_ADMIN": _expected(DEFAULT | mask_of(["SYS_ADMIN"]), devices=False, mount=True, host=False),
        "--privileged": _expected(HOST_BOUNDING, devices=True, mount=True, host=False),
        "--privileged --net host --pid host": _expected(HOST_BOUNDING, devices=True, mount=True, host=True),
    }[mode]


def one_line_error(p, *words):
    assert p.returncode == 125, p.stderr
    assert p.stderr.startswith("labtool: ") and p.stderr.count("\n") == 1, p.stderr
    for word in words:
        assert word in p.stderr, p.stderr


def shell(run, *flags, script):
    p = run("run", "--rm", *flags, "busybox", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    return p.stdout


# --- the notebook's table, row by row, mode by mode ------------------------------------------

@pytest.mark.parametrize("mode,flags", privileged.MODES, ids=[m for m, _ in privileged.MODES])
def test_every_row_of_the_table(mode, flags):
    got = privileged.probe(*flags)
    want = expected(mode)
    wrong = {p.row: (got.get(p.key), want[p.key]) for p in privileged.PROBES
             if got.get(p.key) != want[p.key]}
    assert not wrong, f"{mode}: (seen, expected) {wrong}"


def test_the_host_lacks_sys_resource_and_privileged_copes(run):
    """FACTS: this host's bounding set lacks CAP_SYS_RESOURCE; --privileged gets all the rest."""
    p = run("run", "--rm", "--privileged", "--explain", "busybox", "grep", "CapEff", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[1], 16) == HOST_BOUNDING
    if not HOST_BOUNDING & mask_of(["SYS_RESOURCE"]):
        assert "CAP_SYS_RESOURCE left out" in p.stderr


# --- devices ---------------------------------------------------------------------------------

def test_every_host_device_is_in_its_dev_with_its_numbers(run):
    inside = shell(run, "--privileged", script="find /dev -type c -o -type b | while read n; do "
                                               "echo \"$n $(stat -c '%t:%T' $n)\"; done")
    numbers = dict(line.split() for line in inside.splitlines())
    host = privileged.host_devices()
    assert len(host) > 20 and "/dev/loop-control" in {d.path for d in host}
    for device in host:
        assert device.path in numbers, f"{device.path} missing in a privileged container"
        assert numbers[device.path] == f"{device.major:x}:{device.minor:x}", device.path
    # and a default container has only Docker's few
    default = [n for n in shell(run, script="find /dev -type c -o -type b | sort").split()
               if not n.startswith("/dev/pts/")]       # (its own terminals' ptmx)
    assert default == ["/dev/full", "/dev/null", "/dev/random", "/dev/tty", "/dev/urandom", "/dev/zero"]


def test_its_dev_is_a_copy_not_the_hosts(run):
    """Removing a node inside removes the container's copy only (a devtmpfs would be the host's)."""
    disk = privileged.host_disk()
    assert disk and os.path.exists(f"/dev/{disk}")
    out = shell(run, "--privileged", script=f"rm /dev/{disk} && [ ! -e /dev/{disk} ] && "
                                            "grep ' /dev ' /proc/self/mountinfo")
    assert " - tmpfs " in out
    assert os.path.exists(f"/dev/{disk}")


def test_device_cgroup_allows_all(run, names):
    name = names("devcg")
    p = run("run", "-d", "--name", name, "--privileged", "busybox", "sleep", "30")
    assert p.returncode == 0, p.stderr
    cid = p.stdout.strip()
    cgroup = cgroups.find(cid)
    if cgroup.tree.version == "v1":
        with open(cgroup.path("devices", "devices.list")) as f:
            assert f.read().split("\n")[0] == "a *:* rwm"
    else:
        from labtool.cgroups import bpf
        assert bpf.attached_ids(cgroup.dir) == []          # no program: nothing refused


# --- namespaces stay unless asked ------------------------------------------------------------

def _namespaces_inside(run, *flags):
    script = "for k in " + " ".join(NS_KINDS) + "; do echo $k $(readlink /proc/self/ns/$k); done"
    out = shell(run, *flags, script=script)
    return dict(line.split() for line in out.splitlines())


def test_privileged_still_has_its_own_namespaces(run):
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in NS_KINDS}
    inside = _namespaces_inside(run, "--privileged")
    assert all(inside[k] != host[k] for k in NS_KINDS), (inside, host)
    inside = _namespaces_inside(run, "--privileged", "--net", "host", "--pid", "host")
    assert inside["net"] == host["net"] and inside["pid"] == host["pid"]
    assert all(inside[k] != host[k] for k in ("uts", "mnt", "ipc"))


def test_own_network_namespace_has_lo_and_its_eth0(run):
    # lo, and eth0: its own end of the veth pair of step 05
    assert shell(run, "--privileged", script="tail -n +3 /proc/net/dev | cut -d: -f1").split() == ["lo", "eth0"]
    # (labtool's own lt... links come and go with other containers on this machine: left out)
    host_links = sorted(link for link in os.listdir("/sys/class/net") if not link.startswith("lt"))
    inside = shell(run, "--privileged", "--net", "host", script="ls /sys/class/net").split()
    assert sorted(link for link in inside if not link.startswith("lt")) == host_links


# --- flags: what Docker accepts and refuses --------------------------------------------------

def test_cap_add_is_fine_and_cap_drop_is_ignored(run):
    for flags in (["--cap-add", "SYS_ADMIN"], ["--cap-drop", "ALL"], ["--cap-drop", "NET_RAW", "--cap-add", "CHOWN"]):
        out = shell(run, "--privileged", *flags, script="grep CapEff /proc/self/status")
        assert int(out.split()[1], 16) == HOST_BOUNDING, flags


def test_userns_is_refused_and_nothing_is_left(run):
    before = run("ps", "-a", "-q", "--no-trunc").stdout
    p = run("run", "--privileged", "--userns", "busybox", "true")
    one_line_error(p, "--privileged", "--userns")
    assert run("ps", "-a", "-q", "--no-trunc").stdout == before


def test_upto_before_step_07_refuses_it(run):
    one_line_error(run("run", "--rm", "--upto", "capabilities", "--privileged", "busybox", "true"),
                   "--privileged", "step 07")
    assert shell(run, "--upto", "privileged", script="grep CapEff /proc/self/status").split()[1] == f"{DEFAULT:016x}"


def test_no_new_privileges_still_honoured(run):
    out = shell(run, "--privileged", script="grep NoNewPrivs /proc/self/status")
    assert out.split()[1] == "0"
    out = shell(run, "--privileged", "--security-opt", "no-new-privileges", script="grep NoNewPrivs /proc/self/status")
    assert out.split()[1] == "1"


def test_explain_names_each_protection_switched_off(run):
    p = run("run", "--rm", "--explain", "--privileged", "busybox", "true")
    assert p.returncode == 0, p.stderr
    for protection in privileged.PROTECTIONS:
        assert f"off: {protection.name}" in p.stderr, protection.name
    assert "kept: namespaces pid, uts, mnt, ipc, net" in p.stderr
    quiet = run("run", "--rm", "--explain", "busybox", "true")
    assert "[privileged]" not in quiet.stderr


def test_inspect_says_privileged(run, names):
    a, b = names("priv"), names("plain")
    assert run("create", "--name", a, "--privileged", "busybox", "true").returncode == 0
    assert run("create", "--name", b, "busybox", "true").returncode == 0
    shown = json.loads(run("inspect", a, b).stdout)
    assert [c["HostConfig"]["Privileged"] for c in shown] == [True, False]


def test_exec_in_a_privileged_container_holds_every_capability(run, names):
    name = names("privexec")
    assert run("run", "-d", "--name", name, "--privileged", "busybox", "sleep", "30").returncode == 0
    p = run("exec", name, "grep", "CapEff", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[1], 16) == HOST_BOUNDING


def test_exec_privileged_gives_one_command_every_capability(run, names):
    """docker exec --privileged: this command has every capability; the container keeps Docker's 14."""
    name = names("execpriv")
    assert run("run", "-d", "--name", name, "busybox", "sleep", "30").returncode == 0
    caps = {flag: run("exec", *flag, name, "grep", "CapEff", "/proc/self/status") for flag in ((), ("--privileged",))}
    assert all(p.returncode == 0 for p in caps.values()), caps
    assert int(caps[()].stdout.split()[1], 16) == DEFAULT
    assert int(caps[("--privileged",)].stdout.split()[1], 16) == HOST_BOUNDING
    p = run("exec", name, "ip", "link", "set", "lo", "down")        # CAP_NET_ADMIN: not without it
    assert p.returncode != 0 and "not permitted" in p.stderr
    assert run("exec", "--privileged", name, "ip", "link", "set", "lo", "down").returncode == 0


# --- lifecycle: "uncontainerized", yet managed -----------------------------------------------

@pytest.mark.parametrize("flags", [["--privileged"], ["--privileged", "--net", "host", "--pid", "host"]],
                         ids=["privileged", "privileged-host"])
def test_lifecycle_run_ps_logs_stop_rm(run, names, flags):
    name = names("god")
    script = ("echo links $(tail -n +3 /proc/net/dev | cut -d: -f1 | grep -v lt | wc -l); echo pid $$; "
              "trap 'echo stopping; exit 3' TERM; while :; do sleep 0.1; done")
    p = run("run", "-d", "--name", name, *flags, "busybox", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    assert until(lambda: "pid" in run("logs", name).stdout)
    assert name in run("ps", "--filter", f"name={name}").stdout
    logs = dict(line.split() for line in run("logs", name).stdout.splitlines())
    pid = json.loads(run("inspect", name).stdout)[0]["State"]["Pid"]
    host_view = "--net" in flags
    if host_view:
        # the host sees the container's shell under the very pid the shell sees for itself
        theirs = [link for link in os.listdir("/sys/class/net") if "lt" not in link]
        assert int(logs["pid"]) == pid and int(logs["links"]) == len(theirs)
        assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    else:
        assert logs == {"links": "2", "pid": "1"}         # lo and eth0 (step 05)
    assert run("stop", "-t", "5", name).returncode == 0
    state = json.loads(run("inspect", name).stdout)[0]["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 3)
    assert "stopping" in run("logs", name).stdout
    assert not os.path.exists(f"/proc/{pid}") or until(lambda: not os.path.exists(f"/proc/{pid}"))
    assert run("rm", name).returncode == 0
    assert name not in run("ps", "-a").stdout


# --- God mode, made safe: a scratch disk ------------------------------------------------------

def test_a_privileged_container_formats_and_mounts_a_loop_device(run, tmp_path):
    image = str(tmp_path / "scratch.img")
    with privileged.scratch_disk(image) as disk:
        assert privileged.attached(image) == [disk]
        out = shell(run, "--privileged", script=f"mke2fs {disk} >/dev/null 2>&1 && mkdir -p /mnt/d && "
                                                 f"mount {disk} /mnt/d && echo written-inside > /mnt/d/proof && "
                                                 "umount /mnt/d && echo done")
        assert out.strip() == "done"
        # the host reads what the container wrote: mounted in a mount namespace of its own
        seen = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount -o ro {disk} /mnt && cat /mnt/proof"],
                              capture_output=True, text=True, timeout=30)
        assert seen.stdout.strip() == "written-inside", seen.stderr
        # a default container, even with the node made and SYS_ADMIN, is refused by the device cgroup
        major, minor = os.major(os.stat(disk).st_rdev), os.minor(os.stat(disk).st_rdev)
        p = run("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "sh", "-c",
                f"mknod /tmp/disk b {major} {minor} && head -c 1 /tmp/disk")
        assert p.returncode != 0 and "not permitted" in p.stderr.lower(), p.stderr
    assert privileged.attached(image) == [] and not os.path.exists(image)


def test_scratch_disk_is_detached_even_when_the_work_fails(tmp_path):
    image = str(tmp_path / "broken.img")
    with pytest.raises(RuntimeError):
        with privileged.scratch_disk(image) as disk:
            assert privileged.attached(image) == [disk]
            raise RuntimeError("the demo failed half-way")
    assert privileged.attached(image) == [] and not os.path.exists(image)


# --- the notebook's exercises: their checks refuse the tempting wrong answers ---------------

def test_checks_refuse_an_answer_that_reads_capabilities_only():
    from labtool import check

    with pytest.raises(AssertionError, match="--cap-add ALL"):
        check.privileged_from_files(lambda status, mountinfo: "CapEff:\t000001ff" in status)
    with pytest.raises(AssertionError, match="--device /dev/loop-control"):
        check.privileged_test("[ -e /dev/loop-control ]")
    with pytest.raises(AssertionError, match="more than it needs"):
        check.least_privilege("--cap-add ALL --device DISK")
