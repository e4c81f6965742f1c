"""Step 03: cgroups. Limits a learner can watch being enforced, on this machine's cgroups."""

import json
import os
import subprocess
import time

import pytest

from labtool import cgroups
from labtool.cgroups import v2
from labtool.cgroups.devices import DEFAULT_RULES, DeviceRule
from labtool.spec import Resources


def _container_id(root, name):
    top = os.path.join(root, "lib", "containers")
    for cid in os.listdir(top):
        with open(os.path.join(top, cid, "config.json")) as f:
            if json.load(f).get("name") == name:
                return cid
    raise AssertionError(f"no container named {name}")


# --- memory ---------------------------------------------------------------------------

def test_oom_kill_ends_the_container_with_137_and_is_recorded(run, names):
    name = names("oom")
    p = run("run", "--name", name, "--memory", "20m", "busybox", "tail", "/dev/zero")
    assert p.returncode == 137, p.stderr
    state = json.loads(run("inspect", name).stdout)[0]["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137


def test_a_process_under_the_limit_is_not_killed(run, names):
    name = names("fits")
    p = run("run", "--name", name, "--memory", "20m", "busybox", "sh", "-c", "head -c 5000000 /dev/zero | wc -c")
    assert p.returncode == 0 and p.stdout.strip() == "5000000"
    assert json.loads(run("inspect", name).stdout)[0]["State"]["OOMKilled"] is False


def test_memory_limits_are_written_in_docker_units(background, labtool_root):
    background("mem", "--memory", "64m", "--memory-swap", "100m")
    cgroup = cgroups.find(_container_id(labtool_root, "mem"))
    if cgroup.tree.version == "v1":
        assert cgroups.read(cgroup.path("memory", "memory.limit_in_bytes")) == str(64 << 20)
        assert cgroups.read(cgroup.path("memory", "memory.memsw.limit_in_bytes")) == str(100 << 20)
    else:
        assert cgroups.read(cgroup.path("memory.max")) == str(64 << 20)


# --- processes and CPUs ---------------------------------------------------------------

def test_pids_limit_holds_a_fork_bomb(run):
    bomb = "i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done; echo all started"
    limited = run("run", "--rm", "--pids-limit", "10", "busybox", "sh", "-c", bomb)
    assert limited.returncode != 0 and "can't fork" in limited.stderr
    assert "all started" not in limited.stdout
    free = run("run", "--rm", "busybox", "sh", "-c", bomb)
    assert free.returncode == 0 and "all started" in free.stdout


def test_cpuset_pins_the_container(run):
    p = run("run", "--rm", "--cpuset-cpus", "0", "busybox", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert p.stdout.split() == ["Cpus_allowed_list:", "0"]


def test_cpu_shares_divide_one_cpu_about_two_to_one(background, labtool_root):
    """Two busy loops on CPU 0, shares 1024 and 512: the CPU time they get is close to 2:1."""
    busy = ("sh", "-c", "while :; do :; done")
    background("heavy", "--cpuset-cpus", "0", "--cpu-shares", "1024", command=busy)
    background("light", "--cpuset-cpus", "0", "--cpu-shares", "512", command=busy)
    heavy = cgroups.find(_container_id(labtool_root, "heavy"))
    light = cgroups.find(_container_id(labtool_root, "light"))
    before = heavy.stats()["cpu_ns"], light.stats()["cpu_ns"]
    time.sleep(1.5)
    used_heavy = heavy.stats()["cpu_ns"] - before[0]
    used_light = light.stats()["cpu_ns"] - before[1]
    assert 1.4 < used_heavy / used_light < 2.8, (used_heavy, used_light)


def test_cpus_caps_cpu_time(background, labtool_root):
    background("half", "--cpus", "0.5", command=("sh", "-c", "while :; do :; done"))
    cgroup = cgroups.find(_container_id(labtool_root, "half"))
    before, start = cgroup.stats()["cpu_ns"], time.monotonic()
    time.sleep(1.0)
    share = (cgroup.stats()["cpu_ns"] - before) / ((time.monotonic() - start) * 1e9)
    assert share < 0.65, share          # unlimited, a busy loop would take a whole CPU (1.0)


# --- devices ----------------------------------------------------------------------------

def test_a_device_node_made_inside_cannot_be_opened(run):
    p = run("run", "--rm", "busybox", "sh", "-c",
            "mknod /tmp/disk b 7 0 && dd if=/tmp/disk of=/dev/null count=0")
    assert p.returncode == 1 and "Operation not permitted" in p.stderr
    ok = run("run", "--rm", "busybox", "sh", "-c", "dd if=/dev/zero of=/dev/null count=1")
    assert ok.returncode == 0, ok.stderr


def test_device_flag_gives_a_device_with_its_permissions(run):
    p = run("run", "--rm", "--device", "/dev/loop0:/dev/xvda:r", "busybox", "sh", "-c",
            "dd if=/dev/xvda of=/dev/null count=0 && echo read-ok; dd if=/dev/zero of=/dev/xvda count=0")
    assert "read-ok" in p.stdout
    assert p.returncode == 1 and "Operation not permitted" in p.stderr


# --- stats and clean-up ---------------------------------------------------------------

def test_stats_shows_a_busy_container(background, run):
    background("busy", "--memory", "64m", command=("sh", "-c", "while :; do :; done"))
    p = run("stats", "--no-stream", "busy")
    assert p.returncode == 0, p.stderr
    header, row = p.stdout.splitlines()
    assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    cells = [c.strip() for c in row.split("   ") if c.strip()]
    assert cells[1] == "busy"
    assert float(cells[2].rstrip("%")) > 30               # one busy loop: near 100% of one CPU
    usage, limit = cells[3].split(" / ")
    assert limit == "64MiB" and usage.endswith(("KiB", "MiB"))
    assert cells[-1] == "1"                                # PIDS: the loop alone


def test_the_cgroup_is_gone_after_the_container(run, labtool_root, names):
    name = names("gone")
    p = run("run", "--name", name, "busybox", "true")
    cid = _container_id(labtool_root, name)
    assert p.returncode == 0 and cgroups.find(cid) is None
    assert not os.path.exists(os.path.join("/sys/fs/cgroup/memory/labtool", cid))


def test_the_child_is_in_its_cgroup_having_moved_itself_there_on_v1(run, names, labtool_root):
    """v1: the child writes 0 into each tasks file (no RCU wait); with --userns, and on v2,
    the parent writes its pid into cgroup.procs (or systemd makes the scope around it)."""
    v1 = cgroups.backend().version == "v1"
    for flags in ([], ["--userns"]):
        name = names("joined")
        p = run("run", "-d", "--name", name, "--explain", *flags, "busybox", "sleep", "30")
        assert p.returncode == 0, p.stderr
        cid = _container_id(labtool_root, name)
        with open(os.path.join(labtool_root, "lib", "containers", cid, "state.json")) as f:
            pid = json.load(f)["Pid"]
        assert pid in cgroups.find(cid).pids()
    moves = [line for line in run("run", "--rm", "--explain", "busybox", "true").stderr.splitlines()
             if line.startswith("[cgroups] write ") and ("/tasks" in line or "/cgroup.procs" in line)]
    if v1:
        assert moves and "write 0 > " in moves[0] and "/tasks " in moves[0]
    else:
        assert not any("/tasks" in m for m in moves)
    moves = [line for line in run("run", "--rm", "--explain", "--userns", "busybox", "true").stderr.splitlines()
             if line.startswith("[cgroups] write ") and "/tasks" in line]
    assert not moves


def test_container_sees_its_own_cgroup_as_root(run):
    p = run("run", "--rm", "busybox", "cat", "/proc/self/cgroup")
    assert all(line.endswith(":/") for line in p.stdout.splitlines()), p.stdout


@pytest.mark.parametrize("flags, message", [
    (["--memory", "lots"], "invalid --memory 'lots'"),
    (["--memory", "1m"], "Minimum memory limit allowed is 6MB"),
    (["--memory-swap", "100m"], "You should always set the Memory limit"),
    (["--memory", "64m", "--memory-swap", "32m"], "Minimum memoryswap limit should be larger"),
    (["--cpus", "99"], "Range of CPUs is from 0.01 to"),
    (["--cpuset-cpus", "7-x"], "invalid --cpuset-cpus"),
    (["--cpuset-cpus", "99"], "this machine has CPUs"),
    (["--device", "/dev/nope"], "--device /dev/nope: no such file or directory"),
    (["--device", "/etc/passwd"], "not a device file"),
    (["--device", "/dev/null:/dev/x:rwz"], "invalid --device permissions"),
    (["--upto", "namespaces", "--memory", "64m"], "resource limits need step 03"),
])
def test_bad_limits_are_one_line_and_125(run, labtool_root, flags, message):
    before = os.listdir(os.path.join(labtool_root, "lib", "containers"))
    p = run("run", "--rm", *flags, "busybox", "true")
    assert p.returncode == 125 and message in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    assert os.listdir(os.path.join(labtool_root, "lib", "containers")) == before


# --- the layout, and the v2 file protocol on a scratch tree ------------------------------

MOUNTINFO = {
    "v2": "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    "hybrid": ("30 1 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
               "31 1 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
               "32 1 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"),
    "v1": "31 1 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    "none": "22 1 0:21 / /proc rw - proc proc rw\n",
}


@pytest.mark.parametrize("kind", MOUNTINFO)
def test_layout_is_read_from_mountinfo(tmp_path, kind):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO[kind])
    assert cgroups.layout(str(path)) == kind


def test_v1_tree_maps_each_controller_to_its_mount():
    from labtool.cgroups import v1

    tree = v1.Tree.from_mounts([("/sys/fs/cgroup/cpu,cpuacct", "cgroup", ["rw", "cpu", "cpuacct"]),
                                ("/sys/fs/cgroup/memory", "cgroup", ["rw", "memory"])])
    cgroup = tree.cgroup("abc")
    assert cgroup.dirs == {"cpu": "/sys/fs/cgroup/cpu,cpuacct/labtool/abc",
                           "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/labtool/abc",
                           "memory": "/sys/fs/cgroup/memory/labtool/abc"}
    assert cgroup.distinct_dirs() == ["/sys/fs/cgroup/cpu,cpuacct/labtool/abc", "/sys/fs/cgroup/memory/labtool/abc"]


@pytest.fixture
def scratch_v2(tmp_path, monkeypatch):
    """A directory that behaves like a cgroup2 mount for the files labtool touches: a new
    directory gets cgroup.controllers from its parent's cgroup.subtree_control."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    (root / "cgroup.subtree_control").write_text("")

    def make_dir(path, why=""):
        os.mkdir(path)
        enabled = open(os.path.join(os.path.dirname(path), "cgroup.subtree_control")).read()
        controllers = [w.lstrip("+") for w in enabled.split()]
        for name, text in (("cgroup.controllers", " ".join(controllers)), ("cgroup.subtree_control", ""),
                           ("cgroup.procs", ""), ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")):
            with open(os.path.join(path, name), "w") as f:
                f.write(text)

    monkeypatch.setattr(v2, "make_dir", make_dir)
    attached = []
    return v2.Tree(str(root), attach_devices=lambda d, rules: attached.append((d, rules))), root, attached


def test_v2_enables_controllers_top_down_and_writes_v2_names(scratch_v2):
    tree, root, attached = scratch_v2
    cgroup = tree.cgroup("c1")
    cgroup.create()
    cgroup.apply(Resources(memory=64 << 20, cpu_shares=512, cpus=0.5, cpuset_cpus="0", pids_limit=50), DEFAULT_RULES)
    cgroup.add(4242)
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids +io"
    assert (root / "labtool" / "cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids +io"
    c1 = root / "labtool" / "c1"
    assert (c1 / "memory.max").read_text() == str(64 << 20)
    assert (c1 / "cpu.weight").read_text() == "20"            # 512 shares on v2's 1..10000 scale
    assert (c1 / "cpu.max").read_text() == "50000 100000"
    assert (c1 / "cpuset.cpus").read_text() == "0"
    assert (c1 / "pids.max").read_text() == "50"
    assert (c1 / "cgroup.procs").read_text() == "4242"
    assert (root / "labtool" / "cgroup.procs").read_text() == ""   # no internal processes
    assert attached == [(str(c1), DEFAULT_RULES)]                   # devices: a BPF program, no files
    assert not (c1 / "devices.allow").exists()
    assert cgroup.oom_kills() == 1


def test_v2_never_makes_v1_paths(scratch_v2):
    tree, root, _ = scratch_v2
    tree.cgroup("c2").create()
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["labtool"]


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (262144, 10000)])
def test_shares_to_weight(shares, weight):
    assert v2.shares_to_weight(shares) == weight


def test_device_rules_in_v1_syntax():
    assert DeviceRule(False).v1_line() == "a"
    assert DeviceRule(True, "c", 136, None, "rwm").v1_line() == "c 136:* rwm"
    assert DeviceRule(True, "b", 7, 0, "r").v1_line() == "b 7:0 r"


# --- the driver: cgroupfs, or systemd's delegated scopes -----------------------------------

def test_under_systemd_each_container_is_a_delegated_scope(background, labtool_root):
    """Where systemd is PID 1 (the Vagrant box, `vagrant/test-vm.sh --systemd`): the proof that
    the systemd driver is the one at work. Elsewhere the cgroupfs driver is, and this skips."""
    name, why = cgroups.driver()
    if name != "systemd":
        pytest.skip(f"the cgroupfs driver here ({why})")
    pid = background("scoped", "--memory", "64m")
    short_id = _container_id(labtool_root, "scoped")[:12]
    scope = f"labtool-{short_id}.scope"
    with open(f"/proc/{pid}/cgroup") as f:
        assert f.read().strip() == f"0::/labtool.slice/labtool-{short_id}.slice/{scope}"
    show = subprocess.run(["systemctl", "show", "-p", "Delegate,MemoryMax,ActiveState,OOMPolicy", scope],
                          capture_output=True, text=True).stdout.split()
    assert sorted(show) == ["ActiveState=active", "Delegate=yes", "MemoryMax=67108864", "OOMPolicy=continue"]
    assert cgroups.find(_container_id(labtool_root, "scoped")).dir.endswith("/" + scope)


@pytest.mark.parametrize("kind, env, booted, expected", [
    ("v2", {}, True, "systemd"),                                   # the Vagrant box
    ("v2", {}, False, "cgroupfs"),                                 # the make test-vm guest, a container
    ("hybrid", {}, True, "cgroupfs"),                              # this host: v1 controllers
    ("v1", {}, False, "cgroupfs"),
    ("v2", {"LABTOOL_CGROUP_DRIVER": "cgroupfs"}, True, "cgroupfs"),
    ("v2", {"LABTOOL_CGROUP_DRIVER": "systemd"}, True, "systemd"),
])
def test_driver_is_systemd_on_v2_with_systemd_as_pid_1(tmp_path, kind, env, booted, expected):
    systemd_dir = tmp_path / "run-systemd-system"
    if booted:
        systemd_dir.mkdir()
    name, why = cgroups.driver(kind, env, str(systemd_dir))
    assert name == expected and why


@pytest.mark.parametrize("kind, env, booted, message", [
    ("hybrid", {"LABTOOL_CGROUP_DRIVER": "systemd"}, True, "needs a pure cgroup v2 machine"),
    ("v2", {"LABTOOL_CGROUP_DRIVER": "systemd"}, False, "systemd is not PID 1 here"),
    ("v2", {"LABTOOL_CGROUP_DRIVER": "docker"}, True, "use cgroupfs or systemd"),
])
def test_driver_refuses_what_cannot_work(tmp_path, kind, env, booted, message):
    systemd_dir = tmp_path / "run-systemd-system"
    if booted:
        systemd_dir.mkdir()
    with pytest.raises(Exception, match=message):
        cgroups.driver(kind, env, str(systemd_dir))


CID = "0123456789ab" + "c" * 52
BUSCTL = ["busctl", "call", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
          "org.freedesktop.systemd1.Manager"]


def test_systemd_scope_is_asked_for_with_the_pid_and_the_limits_as_properties():
    from labtool.cgroups import systemd

    res = Resources(memory=64 << 20, memory_swap=100 << 20, cpu_shares=512, cpus=0.5, cpuset_cpus="0", pids_limit=50)
    assert systemd.start_command(CID, 4242, res) == BUSCTL + [
        "StartTransientUnit", "ssa(sv)a(sa(sv))", "labtool-0123456789ab.scope", "fail",
        "12",
        "Description", "s", "labtool container 0123456789ab",
        "Slice", "s", "labtool-0123456789ab.slice",
        "Delegate", "b", "true",
        "PIDs", "au", "1", "4242",
        "DefaultDependencies", "b", "false",
        "CollectMode", "s", "inactive-or-failed",
        "OOMPolicy", "s", "continue",
        "MemoryMax", "t", str(64 << 20),
        "MemorySwapMax", "t", str(36 << 20),                   # swap alone, as memory.swap.max
        "CPUQuotaPerSecUSec", "t", "500000",                   # --cpus 0.5: cpu.max "50000 100000"
        "AllowedCPUs", "ay", "1", "1",                         # a bit mask: CPU 0
        "TasksMax", "t", "50",
        "1", "labtool-0123456789ab.slice",                     # made in the same call
        "2",
        "Description", "s", "labtool container 0123456789ab: keeps its OOM count",
        "CPUWeight", "t", "20",                                # --cpu-shares 512: the slice's weight
    ]


def test_systemd_scope_without_limits_and_the_cpu_mask():
    from labtool.cgroups import systemd

    argv = systemd.start_command(CID, 7, Resources(memory=32 << 20, memory_swap=-1))
    assert argv[9] == "10"                                        # seven, memory's two, TasksMax
    assert argv[argv.index("TasksMax") + 2] == str((1 << 64) - 1)  # no --pids-limit: none (systemd's default: 15%)
    assert argv[argv.index("MemorySwapMax") + 2] == str((1 << 64) - 1)    # --memory-swap -1: infinity
    assert argv[-6:] == ["1", "labtool-0123456789ab.slice", "1", "Description", "s",
                         "labtool container 0123456789ab: keeps its OOM count"]
    assert systemd.cpu_mask({0, 1, 9}) == [3, 2]


class FakeSystemd:
    """Just enough of systemd and busctl for one container: StartTransientUnit makes the
    slice and scope directories and puts the pid in (a fake /proc/PID/cgroup); KillUnit and
    StopUnit remove them; systemctl show answers ControlGroup."""

    def __init__(self, mount, proc):
        self.mount, self.proc, self.calls, self.units = mount, proc, [], {}

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[:2] == ["systemctl", "show"]:
            return 0, self.units.get(argv[-1], "") + "\n", ""
        if argv[:2] == ["busctl", "get-property"]:
            return 1, "", "Unknown object"                   # jobs are done at once here
        method, args = argv[5], argv[7:]
        if method == "StartTransientUnit":
            scope, pid = args[0], args[args.index("PIDs") + 3]
            slice_ = args[args.index("Slice") + 2]
            path = f"/labtool.slice/{slice_}/{scope}"
            for unit, where in ((scope, path), (slice_, os.path.dirname(path)), ("labtool.slice", "/labtool.slice")):
                self.units[unit] = where
            os.makedirs(self.mount / path.lstrip("/"))
            for d in (self.mount / "labtool.slice", self.mount / path.lstrip("/"), self.mount / os.path.dirname(path).lstrip("/")):
                (d / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
            (self.mount / path.lstrip("/") / "cgroup.procs").write_text(pid)
            (self.proc / pid).mkdir()
            (self.proc / pid / "cgroup").write_text(f"0::{path}\n")
            return 0, 'o "/org/freedesktop/systemd1/job/85"\n', ""
        if args[0] not in self.units:
            return 1, "", f"Call failed: Unit {args[0]} not loaded."
        if method == "StopUnit":
            import shutil
            shutil.rmtree(self.mount / self.units[args[0]].lstrip("/"))
            for unit in [u for u, where in self.units.items() if where.startswith(self.units[args[0]])]:
                del self.units[unit]
        return 0, 'o "/org/freedesktop/systemd1/job/86"\n', ""


def test_systemd_cgroup_made_around_the_pid_limits_written_in_the_scope_then_stopped(tmp_path):
    from labtool.cgroups import systemd

    mount, proc = tmp_path / "cgroup", tmp_path / "proc"
    mount.mkdir(), proc.mkdir()
    fake = FakeSystemd(mount, proc)
    attached = []
    tree = systemd.Tree(str(mount), attach_devices=lambda d, rules: attached.append(d), run=fake,
                        lock=str(tmp_path / "lock"), proc=str(proc))
    cgroup = tree.cgroup(CID)
    assert not cgroup.exists()
    res = Resources(memory=64 << 20, cpu_shares=512, pids_limit=50)
    cgroup.create(4242, res)
    scope = mount / "labtool.slice" / "labtool-0123456789ab.slice" / "labtool-0123456789ab.scope"
    assert [c for c in fake.calls if "StartTransientUnit" in c] == [systemd.start_command(CID, 4242, res)]
    assert cgroup.dir == str(scope) and cgroup.pids() == [4242]      # read from /proc/4242/cgroup
    cgroup.apply(res, DEFAULT_RULES)
    assert (scope / "memory.max").read_text() == str(64 << 20)       # as the cgroupfs driver writes it
    assert (scope / "pids.max").read_text() == "50"
    assert not (scope / "cpu.weight").exists()                        # the weight is the slice's
    assert attached == [str(scope)]
    (scope.parent / "memory.events").write_text("oom 1\noom_kill 1\n")   # the kernel counts it in the slice too
    import shutil
    shutil.rmtree(scope)                                              # systemd collects the empty scope
    assert cgroup.oom_kills() == 1
    cgroup.remove()
    stops = [c[5:8] for c in fake.calls if c[:2] == ["busctl", "call"] and c[5] in ("KillUnit", "StopUnit")]
    assert stops == [["StopUnit", "ss", "labtool.slice"]]            # the last container: all of it
    assert not (mount / "labtool.slice").exists()


def test_systemd_remove_kills_what_is_left_and_keeps_labtool_slice_for_others(tmp_path):
    from labtool.cgroups import systemd

    mount, proc = tmp_path / "cgroup", tmp_path / "proc"
    mount.mkdir(), proc.mkdir()
    fake = FakeSystemd(mount, proc)
    tree = systemd.Tree(str(mount), attach_devices=lambda d, rules: None, run=fake,
                        lock=str(tmp_path / "lock"), proc=str(proc))
    (mount / "labtool.slice" / "labtool-another.slice").mkdir(parents=True)
    tree.cgroup(CID).create(4242, Resources())
    found = tree.cgroup(CID)                                          # as cgroups.find makes it
    assert found.exists() and found.dir.endswith("/labtool-0123456789ab.scope")
    found.remove()
    calls = [c[5:8] for c in fake.calls if c[:2] == ["busctl", "call"]][1:]
    assert calls == [["KillUnit", "ssi", "labtool-0123456789ab.scope"], ["StopUnit", "ss", "labtool-0123456789ab.slice"]]
    assert sorted(os.listdir(mount / "labtool.slice")) == ["labtool-another.slice", "memory.events"]


def test_reset_finds_the_labtool_units_systemd_has_loaded():
    from labtool.cgroups import systemd

    listing = ("  labtool-0123456789ab.slice loaded active active labtool container 0123456789ab\n"
               "\u25cf labtool-0123456789ab.scope loaded failed failed labtool container 0123456789ab\n"
               "  labtool.slice              loaded active active Slice /labtool\n"
               "  labtool-vm.service         loaded active running not ours\n")
    assert systemd.leftover_units(lambda argv: (0, listing, "")) == [
        "labtool-0123456789ab.slice", "labtool-0123456789ab.scope", "labtool.slice"]
