"""Step 06: capabilities, masked and read-only paths, as a process inside sees them.

Never changes the host: the SYS_TIME probe runs only in containers that lack SYS_TIME (and its
guard is tested with a harmless command), renice changes the container's own shell, `ip link`
works in the container's own network namespace, writes to read-only paths only open a file.
"""

import json
import os
import time

import pytest

from labtool import capabilities
from labtool.capabilities import BY_NAME, DOCKER_DEFAULT, NOT_RUN, Probe, mask_of, names_of, read_sets
from labtool.spec import Capabilities

DEFAULT = 0x00000000A80425FB            # Docker's CapEff (FACTS.md)
HOST_BOUNDING = read_sets()["CapBnd"]   # this machine's: here all but CAP_SYS_RESOURCE


def sets_inside(run, *flags, command="grep -E '^(Cap|NoNewPrivs)' /proc/self/status"):
    p = run("run", "--rm", *flags, "busybox", "sh", "-c", command)
    assert p.returncode == 0, p.stderr
    return {key: int(value, 16) if key.startswith("Cap") else int(value)
            for key, _, value in (line.partition(":\t") for line in p.stdout.splitlines())}


def one_line_error(p, *words):
    assert p.returncode == 125, p.stderr
    assert p.stderr.startswith("labtool: ") and p.stderr.count("\n") == 1, p.stderr
    for word in words:
        assert word in p.stderr, p.stderr


# --- names and masks (no container needed) ------------------------------------------------

def test_the_table_is_the_kernels_and_the_default_is_dockers():
    assert [c.number for c in capabilities.CAPABILITIES] == list(range(41))
    assert mask_of(DOCKER_DEFAULT) == DEFAULT
    assert names_of(0x3) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]
    assert capabilities.parse_name("cap_net_admin") == capabilities.parse_name("Net_Admin") == "NET_ADMIN"


def test_dockers_rules_for_add_and_drop():
    def caps(add=(), drop=(), available=(1 << 41) - 1):
        return capabilities.plan(Capabilities(list(add), list(drop)), available).caps

    assert caps() == DEFAULT
    assert caps(drop=["chown"], add=["CHOWN"]) == DEFAULT                 # an add wins
    assert caps(drop=["ALL"], add=["NET_ADMIN"]) == 1 << 12
    assert caps(add=["ALL"], drop=["SYS_ADMIN"]) == ((1 << 41) - 1) & ~(1 << 21)
    assert caps(add=["ALL"], drop=["ALL"]) == (1 << 41) - 1               # as in moby: add ALL wins
    without_resource = ((1 << 41) - 1) & ~(1 << 24)
    assert caps(add=["ALL"], available=without_resource) == without_resource   # quietly left out


# --- what a container's processes hold ----------------------------------------------------

def test_default_set_inside_is_dockers(run):
    inside = sets_inside(run)
    assert inside["CapEff"] == inside["CapPrm"] == inside["CapBnd"] == DEFAULT
    assert inside["CapInh"] == inside["CapAmb"] == 0 and inside["NoNewPrivs"] == 0
    for cap in capabilities.CAPABILITIES:
        assert bool(inside["CapEff"] >> cap.number & 1) == (cap.name in DOCKER_DEFAULT), cap.name


def test_add_and_drop_by_any_spelling(run):
    inside = sets_inside(run, "--cap-add", "net_admin", "--cap-add", "CAP_SYS_NICE", "--cap-drop", "Chown",
                         "--cap-drop", "cap_net_raw")
    expected = (DEFAULT & ~mask_of(["CHOWN", "NET_RAW"])) | mask_of(["NET_ADMIN", "SYS_NICE"])
    assert inside["CapEff"] == inside["CapBnd"] == expected


def test_drop_all_then_add_one(run):
    inside = sets_inside(run, "--cap-drop", "ALL", "--cap-add", "NET_ADMIN")
    assert inside["CapEff"] == inside["CapBnd"] == 1 << BY_NAME["NET_ADMIN"].number


def test_add_all_is_all_the_host_has_and_explain_says_what_is_left_out(run):
    p = run("run", "--rm", "--explain", "--cap-add", "ALL", "busybox", "grep", "CapEff", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[1], 16) == HOST_BOUNDING
    lacking = names_of(capabilities.all_capabilities() & ~HOST_BOUNDING)
    for name in lacking:                  # CAP_SYS_RESOURCE here
        assert f"{name} left out" in p.stderr and "this host's own bounding set lacks it" in p.stderr


def test_a_capability_the_host_lacks_cannot_be_added(run):
    lacking = names_of(capabilities.all_capabilities() & ~HOST_BOUNDING)
    if not lacking:
        pytest.skip("this host's bounding set has every capability")
    p = run("run", "--rm", "--cap-add", lacking[0].removeprefix("CAP_").lower(), "busybox", "true")
    one_line_error(p, f"cannot add {lacking[0]}", "this host's own bounding set lacks it")


def test_bad_names_and_options_are_one_line_and_125(run):
    one_line_error(run("run", "--rm", "--cap-add", "FOO", "busybox", "true"), "unknown capability 'FOO' for --cap-add")
    one_line_error(run("run", "--rm", "--cap-drop", "CAP_", "busybox", "true"), "unknown capability 'CAP_'")
    one_line_error(run("create", "--cap-drop", "sys-admin", "busybox", "true"), "for --cap-drop")
    one_line_error(run("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "true"),
                   "invalid --security-opt 'seccomp=unconfined'")
    one_line_error(run("run", "--rm", "--upto", "overlay", "--cap-drop", "ALL", "busybox", "true"),
                   "step 06", "--upto overlay")


def test_upto_overlay_keeps_roots_full_set(run):
    assert sets_inside(run, "--upto", "overlay")["CapEff"] == HOST_BOUNDING
    assert sets_inside(run, "--upto", "capabilities")["CapEff"] == DEFAULT


def test_a_user_other_than_root_has_no_effective_capabilities(run):
    for flags in (["--user", "1000"], ["--user", "nobody", "--cap-add", "NET_ADMIN"]):
        inside = sets_inside(run, *flags)
        assert inside["CapEff"] == inside["CapPrm"] == inside["CapInh"] == inside["CapAmb"] == 0, flags
    assert inside["CapBnd"] == DEFAULT | mask_of(["NET_ADMIN"])       # the ceiling is still the container's
    assert sets_inside(run, "--user", "0:1000")["CapEff"] == DEFAULT   # uid 0 is root, whatever the group


def test_userns_gets_the_same_set(run):
    inside = sets_inside(run, "--userns")
    assert inside["CapEff"] == inside["CapBnd"] == DEFAULT


def test_no_new_privileges(run):
    for opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
        assert sets_inside(run, "--security-opt", opt)["NoNewPrivs"] == 1, opt
    assert sets_inside(run, "--security-opt", "no-new-privileges:false")["NoNewPrivs"] == 0
    # a set-user-ID-root ping works for nobody without it, and not with it
    setuid_ping = ("mkdir /tmp/s && cp /bin/busybox /tmp/s/ping && chmod 4755 /tmp/s/ping && "
                   "su -s /bin/sh nobody -c '/tmp/s/ping -c 1 -W 1 127.0.0.1 >/dev/null && echo PING'")
    assert run("run", "--rm", "busybox", "sh", "-c", setuid_ping).stdout == "PING\n"
    p = run("run", "--rm", "--security-opt", "no-new-privileges", "busybox", "sh", "-c", setuid_ping)
    assert "PING" not in p.stdout and "permission denied" in p.stderr


# --- probes: what the kernel allows -------------------------------------------------------

def test_probes_of_the_default_set(run):
    assert capabilities.probe() == {
        "CHOWN": True, "DAC_OVERRIDE": True, "SETUID": True, "MKNOD": True, "NET_RAW": True, "SYS_CHROOT": True,
        "NET_ADMIN": False, "SYS_ADMIN": False, "SYS_NICE": False, "SYS_RESOURCE": False,
        "SYS_TIME": False}          # the only SYS_TIME probe of the tests: where it must fail


def test_each_probe_needs_its_capability(run):
    assert not any(capabilities.probe("--cap-drop", "ALL").values())
    added = capabilities.probe("--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_NICE",
                               "--cap-drop", "CHOWN", "--cap-drop", "MKNOD", "--cap-drop", "NET_RAW",
                               probes=[p for p in capabilities.PROBES if p.capability != "SYS_TIME"])
    assert added["SYS_ADMIN"] and added["NET_ADMIN"] and added["SYS_NICE"]
    assert not (added["CHOWN"] or added["MKNOD"] or added["NET_RAW"])
    assert added["DAC_OVERRIDE"] and added["SETUID"]
    assert not any(capabilities.probe("--user", "1000").values())


def test_the_clock_probe_never_runs_where_it_could_work(run, tmp_path):
    """The guard, proved with a harmless command in place of date -s."""
    marker = Probe("SYS_TIME", "the guard", "touch /tmp/ran")
    assert capabilities.probe("--cap-add", "SYS_TIME", probes=[marker]) == {"SYS_TIME": NOT_RUN}
    assert capabilities.probe("--cap-add", "SYS_TIME", "--user", "1000", probes=[marker]) == {"SYS_TIME": NOT_RUN}
    assert capabilities.probe(probes=[marker]) == {"SYS_TIME": True}


# --- masked and read-only paths -----------------------------------------------------------

def test_masked_paths_are_empty_inside(run):
    present = [path for path, _ in capabilities.MASKED if os.path.exists(path)]
    assert "/proc/timer_list" in present
    script = "; ".join(f"if [ -d {p} ]; then echo {p} $(ls -A {p} | wc -l); else echo {p} $(wc -c < {p}); fi"
                       for p in present)
    p = run("run", "--rm", "busybox", "sh", "-c", script)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [f"{path} 0" for path in present]
    before = run("run", "--rm", "--upto", "overlay", "busybox", "sh", "-c", "wc -c < /proc/timer_list")
    assert int(before.stdout) > 0                       # the host's timers, without the step
    p = run("run", "--rm", "busybox", "sh", "-c", "umount /proc/timer_list || rm /proc/timer_list; wc -c < /proc/timer_list")
    assert p.stdout.strip() == "0"


def test_read_only_paths_refuse_writes(run):
    present = [path for path, _ in capabilities.READ_ONLY if os.path.exists(path)]
    assert "/proc/sys" in present
    p = run("run", "--rm", "busybox", "cat", "/proc/self/mountinfo")
    options = {line.split()[4]: line.split()[5].split(",") for line in p.stdout.splitlines()}
    for path in present:
        assert "ro" in options[path], (path, options.get(path))
    # Opening for writing is enough to be refused; nothing is ever written. The UTS
    # namespace's own hostname file: harmless even if a bug let it through.
    p = run("run", "--rm", "--hostname", "inside", "busybox", "sh", "-c",
            "true >> /proc/sys/kernel/hostname; true >> /proc/sys/net/ipv4/ping_group_range; cat /proc/sys/kernel/hostname")
    assert p.stdout == "inside\n" and p.stderr.count("Read-only file system") == 2, p.stderr


# --- exec, --init, inspect, --explain -----------------------------------------------------

def test_exec_and_init_get_the_same_set(run, names):
    name = names("caps")
    p = run("run", "-d", "--init", "--name", name, "--cap-drop", "NET_RAW", "--cap-add", "SYS_NICE",
            "--security-opt", "no-new-privileges", "busybox", "sleep", "30")
    assert p.returncode == 0, p.stderr
    expected = {"CapEff": f"{DEFAULT & ~mask_of(['NET_RAW']) | mask_of(['SYS_NICE']):016x}", "NoNewPrivs": "1"}
    for who in ("1", "self"):           # --init's PID 1, and the process labtool exec started
        p = run("exec", name, "grep", "-E", "^(CapEff|NoNewPrivs)", f"/proc/{who}/status")
        assert dict(line.split(":\t") for line in p.stdout.splitlines()) == expected, who
    p = run("exec", "-u", "1000", name, "grep", "CapEff", "/proc/self/status")
    assert p.stdout.split() == ["CapEff:", "0000000000000000"]


def test_inspect_shows_the_flags_and_the_effective_set(run, names):
    name = names("caps-inspect")
    p = run("run", "-d", "--name", name, "--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN",
            "--security-opt", "no-new-privileges", "busybox", "sleep", "30")
    assert p.returncode == 0, p.stderr
    deadline = time.time() + 5
    while True:
        info = json.loads(run("inspect", name).stdout)[0]
        if info["State"]["Running"] or time.time() > deadline:
            break
        time.sleep(0.05)
    host = info["HostConfig"]
    assert host["CapAdd"] == ["net_admin"] and host["CapDrop"] == ["CAP_CHOWN"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert info["State"]["EffectiveCaps"] == names_of((DEFAULT & ~mask_of(["CHOWN"])) | mask_of(["NET_ADMIN"]))
    run("rm", "-f", name)
    plain = names("caps-plain")
    run("create", "--name", plain, "busybox", "true")
    info = json.loads(run("inspect", plain).stdout)[0]
    assert info["HostConfig"]["CapAdd"] is None and info["State"]["EffectiveCaps"] is None


def test_explain_tells_it_in_a_few_lines(run):
    p = run("run", "--rm", "--explain", "--security-opt", "no-new-privileges", "busybox", "true")
    assert p.returncode == 0, p.stderr
    mine = [line for line in p.stderr.splitlines() if line.startswith("[capabilities]")]
    assert 4 <= len(mine) <= 7, mine
    assert sum("PR_CAPBSET_DROP" in line for line in mine) == 1
    assert any("capset(effective=permitted=0xa80425fb, inheritable=0)" in line for line in mine)
    assert any("PR_SET_NO_NEW_PRIVS" in line for line in mine)
    order = [i for i, line in enumerate(p.stderr.splitlines()) if "pivot_root(" in line or "capset(" in line
             or "execve(" in line]
    assert len(order) == 3 and order == sorted(order)        # pivot_root, then capset, then execve
