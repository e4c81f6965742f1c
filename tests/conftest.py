"""Shared fixtures: root only, a temporary labtool root, and the host-state guard.

The guard records what labtool could leave behind on the host before the whole run and
compares after it: mounts, network links, network namespaces, cgroups, iptables rules,
loop devices, the hostname, and processes in other PID namespaces or running labtool. Any difference
fails the run, naming what was left.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("labtool's tests need root (namespaces, mounts, cgroups): run them with sudo", returncode=1)
    # A labtool root of the run's own, set before anything starts: nbval starts each notebook's
    # kernel while collecting, before any fixture runs, and the kernel inherits this environment.
    # Like /var/lib/labtool, others may pass through, so --userns (uid 100000) can reach it.
    root = tempfile.mkdtemp(prefix="labtool-test-")
    os.chmod(root, 0o711)
    config.labtool_saved_env = {k: os.environ.get(k) for k in ("LABTOOL_ROOT", "PYTHONPATH", "LABTOOL_TEST_RUN")}
    os.environ["LABTOOL_ROOT"] = root
    # Inherited by everything the tests start, on any labtool root: a labtool daemon that a
    # test started on the default root (provision.sh's, say) is still this run's (see _foreign_processes)
    os.environ["LABTOOL_TEST_RUN"] = str(os.getpid())
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")


def pytest_unconfigure(config):
    for key, value in getattr(config, "labtool_saved_env", {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# --- host state -----------------------------------------------------------------------

# Another labtool run (a second test session, a notebook, a benchmark) may share this
# machine: what lives under another labtool root is its business, not a leak of ours.
OURS = []          # our labtool root and pytest's base temporary directory, once known


def _is_ours(path):
    return not OURS or any(path.startswith(prefix) for prefix in OURS)


def _another_runs(pid):
    """True if ``pid`` descends from a labtool started with another LABTOOL_ROOT."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0"))
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if b"LABTOOL_ROOT" in env:
            return not _is_ours(env[b"LABTOOL_ROOT"].decode())
        if _runs_labtool(pid):
            return True                   # a labtool on the default root: never this run's
        pid = parent
    return False


def _runs_labtool(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return _is_labtool(argv)


def _another_runs_netns(name):
    """A network namespace that a test of another pytest run made: tests name theirs
    ``lt-<what>test-<pid>-...`` with the pid of their pytest process."""
    head, _, rest = name.partition("test-")
    pid = rest.split("-")[0]
    return head.startswith("lt-") and pid.isdigit() and int(pid) != os.getpid()


def _is_labtool(argv):
    """labtool itself, or one of its own processes (``python -m labtool.network.dns serve``)."""
    return ("labtool" in argv or any(a.endswith("/labtool") for a in argv[:2])
            or any(a.startswith("labtool.") for a in argv[1:3]))


def _mounts():
    with open("/proc/self/mountinfo") as f:
        found = {(line.split()[4], line.split(" - ")[1].split()[0]) for line in f}
    containers = ("/lib/containers/", "/labtool/containers/")      # a test root's, or /var/lib/labtool's
    return sorted(m for m in found if (not any(c in m[0] for c in containers) or _is_ours(m[0]))
                  and not (m[0].startswith("/run/netns/") and _another_runs_netns(m[0][len("/run/netns/"):])))


def _cgroups():
    found = set()
    with open("/proc/self/mountinfo") as f:
        tops = [line.split()[4] for line in f if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")]
    for top in tops:
        for dirpath, dirs, _ in os.walk(top):
            # (the shared parent, <controller>/labtool, comes and goes with everyone's containers)
            if "labtool" in dirpath and os.path.basename(dirpath) != "labtool" and not _held_by_another_run(dirpath):
                found.add(dirpath)
    return sorted(found)


def _held_by_another_run(cgroup_dir):
    try:
        with open(os.path.join(cgroup_dir, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return False
    return bool(pids) and all(_another_runs(pid) for pid in pids)


def _links():
    """Network links; those another labtool root made (``lt<tag>...``, see labtool/network/naming.py)
    are that run's business, ours must all be gone."""
    from labtool.network import naming

    private = {tag[:4] for tag in PRIVATE_TAGS}
    return sorted(name for name in os.listdir("/sys/class/net")
                  if not name.startswith("lt") or naming.is_ours(name) or naming.tag_of_link(name) in private)


def _root_records():
    """The run's own roots among those labtool notes machine-wide (labtool/network/naming.py)."""
    from labtool.network import naming

    return sorted(path for path in naming.recorded_roots().values() if _is_ours(path))


# Tags (6 hex digits, see labtool/network/publish.root_tag) of the labtool roots that this run's
# tests made in pytest's temporary directory (``LABTOOL_ROOT=tmp_path/...``): their links and
# chains are this run's too, so the guard counts them.
PRIVATE_TAGS = set()


def _private_roots():
    """{tag: path} of the LABTOOL_ROOTs under pytest's temporary directory that made bridges
    (labtool notes each root that does, see labtool/network/naming.py), deleted ones too."""
    from labtool.network import naming

    if len(OURS) < 2:
        return {}
    return {tag: path for tag, path in naming.recorded_roots().items()
            if path.startswith(os.path.realpath(OURS[1]) + "/")}


def _iptables():
    """iptables rules; another root's chains (``LABTOOL-<tag>-...``) and the jumps into them left out."""
    if not shutil.which("iptables-save"):
        return []
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line.split(" [")[0] for line in out.splitlines()
            if line and not line.startswith("#") and not _another_roots_chain(line) and not _table_frame(line)]


BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")


def _table_frame(line):
    """The frame of a table that merely got loaded (the first iptables command on a fresh
    machine does that): ``*nat``, ``COMMIT``, and built-in chains with their default policy
    ACCEPT. A rule, a chain of ours or a changed policy is still seen."""
    if line.startswith("*") or line == "COMMIT":
        return True
    parts = line.split()
    return line.startswith(":") and parts[0][1:] in BUILTIN_CHAINS and parts[1:2] == ["ACCEPT"]


def _another_roots_chain(line):
    """True for a line about another labtool root's chains (``LABTOOL-<tag>-...``): the rules of
    another test run or a lecturer's labtool come and go with their own containers."""
    from labtool.network import naming, publish

    tags = {publish.chain_tag(m.group(0)) for m in publish.CHAIN_RE.finditer(line)}
    return bool(tags) and naming.root_tag6() not in tags and not tags & PRIVATE_TAGS


def _foreign_processes():
    """Processes in another PID namespace than ours, or running labtool on our root."""
    mine = os.readlink("/proc/self/ns/pid")
    our_root = f"LABTOOL_ROOT={os.environ.get('LABTOOL_ROOT', '')}".encode()
    our_run = f"LABTOOL_TEST_RUN={os.getpid()}".encode()
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            ns = os.readlink(f"/proc/{pid}/ns/pid")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        runs_labtool = _is_labtool(argv)
        started_here = False
        if runs_labtool and ns == mine:   # another lab or benchmark may run next to the tests
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            runs_labtool = our_root in env
            started_here = our_run in env     # by a test, on whatever root
        if started_here or ((ns != mine or runs_labtool) and not _another_runs(int(pid))):
            found.add((int(pid), " ".join(argv)[:80]))
    return found


def _loop_devices():
    """Attached loop devices (man 4 loop) whose backing file is ours: notebook 07 and
    test_privileged attach scratch files under the test root or pytest's temporary directory."""
    found = []
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue                     # not a loop device, or nothing attached
        if _is_ours(backing):
            found.append(f"/dev/{name} {backing}")
    return found


def host_state():
    return {
        "loop devices": _loop_devices(),
        "mounts": _mounts(),
        "links": _links(),
        "root records": _root_records(),
        "netns": sorted(n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
                        if not _another_runs_netns(n)),
        "cgroups": _cgroups(),
        "iptables": _iptables(),
        "hostname": socket.gethostname(),
        "processes": _foreign_processes(),
    }


def host_state_diff(before, after):
    problems = []
    for key in before:
        if key == "processes":
            left = sorted(after[key] - before[key])
            if left:
                problems.append(f"processes left running: {left}")
        elif key == "cgroups":             # only what is new: containers of other runs may end meanwhile
            added = [x for x in after[key] if x not in before[key]]
            if added:
                problems.append(f"cgroups left: {added}")
        elif before[key] != after[key]:
            added = [x for x in after[key] if x not in before[key]] if isinstance(after[key], list) else after[key]
            gone = [x for x in before[key] if x not in after[key]] if isinstance(before[key], list) else before[key]
            problems.append(f"{key} changed: added {added}, gone {gone}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def labtool_root(tmp_path_factory):
    """A labtool root of the test run's own, and the guard that the host is left clean."""
    root = os.environ["LABTOOL_ROOT"]             # made in pytest_configure
    OURS[:] = [root, str(tmp_path_factory.getbasetemp())]
    # nbval's cells run before this fixture (it is not theirs): the default bridge they made goes
    # first, so that it is neither in the state before nor after (it goes again at the end)
    _remove_default_bridge()
    before = host_state()
    made = labtool("run", "--rm", "busybox", "true")   # the base image, made once for the run
    assert made.returncode == 0, made.stderr
    yield root
    labtool("system", "stop-daemon")                # the run's labtool daemon goes with it,
    _stop_private_daemons()                         # and those of the tests' own roots
    _remove_default_bridge()                        # (dockerd keeps docker0; a test root goes)
    for tag, private in _private_roots().items():   # so do those of the tests' own roots, and
        PRIVATE_TAGS.add(tag)                       # anything else they left is reported
        if os.path.isdir(private):                  # (a root deleted without reset: all of it)
            _remove_default_bridge(private)
    problems = host_state_diff(before, host_state())
    if problems:   # fail, but first take it down the way a user would
        problems.append("labtool reset said: " + labtool("reset").stdout.strip().replace("\n", "; "))
    if not problems:
        shutil.rmtree(root)
    assert not problems, "the tests left things on the host:\n" + "\n".join(problems)


def _stop_private_daemons():
    """The labtool daemons of the roots that tests made in pytest's temporary directory
    (``LABTOOL_ROOT=tmp_path/...``): the daemon is labtool's default, and such a root is not
    removed at once (a daemon whose root is removed exits within a second by itself)."""
    base = os.path.realpath(OURS[1]) + "/"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"labtool.engine.daemon" not in f.read().split(b"\0")[1:3]:
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0"))
        except OSError:
            continue
        root = env.get(b"LABTOOL_ROOT", b"").decode()
        if root.startswith(base) or os.path.realpath(root).startswith(base):
            labtool("system", "stop-daemon", env=dict(os.environ, LABTOOL_ROOT=root))


def _remove_default_bridge(root=None):
    """The run's default bridge (or that of the labtool root ``root``) and its rules, if no
    container is left on it (else the guard reports the bridge, with whatever else was left)."""
    if root is not None:
        labtool("system", "stop-daemon", env=dict(os.environ, LABTOOL_ROOT=root))
        code = "from labtool.network import store; store.remove_default()"
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, LABTOOL_ROOT=root), check=True)
        return
    from labtool.network import store

    store.remove_default()


# --- running labtool the way a user does ------------------------------------------------

def until(what, timeout=10):
    """Poll ``what()`` until it is true; its value (AssertionError after ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def labtool(*args, input=None, timeout=60, env=None):
    """Run ``python -m labtool ARGS`` of this checkout; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "labtool", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def run():
    return labtool


@pytest.fixture
def background(labtool_root):
    """Start named containers in the background (until the lifecycle step brings -d)."""
    started = []

    def start(name, *args, command=("sleep", "30")):
        p = subprocess.Popen([sys.executable, "-m", "labtool", "run", "--rm", "--name", name, *args,
                              "busybox", *command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            pid = running_pid(labtool_root, name)
            if pid:
                started.append((p, pid))
                return pid
            time.sleep(0.05)
        p.kill()
        raise AssertionError(f"container {name} did not start: {p.communicate()}")

    yield start
    for p, pid in started:
        try:
            os.kill(pid, 9)        # SIGKILL reaches a PID 1 from the parent namespace
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


def running_pid(root, name):
    top = os.path.join(root, "lib", "containers")
    for cid in os.listdir(top) if os.path.isdir(top) else []:
        try:
            config = json.load(open(os.path.join(top, cid, "config.json")))
            state = json.load(open(os.path.join(top, cid, "state.json")))
        except (OSError, ValueError):
            continue
        if config.get("name") == name and state.get("Status") == "running":
            return state["Pid"]
    return 0


@pytest.fixture
def names(run):
    """Unique container names for a test; the containers are removed (with -v) after it."""
    made = []

    def name(base):
        made.append(f"{base}-{os.getpid()}-{len(made)}")
        return made[-1]

    yield name
    if made:
        run("rm", "-f", "-v", *made)


@pytest.fixture
def images():
    """Image names for a test; removed after it (``rmi -f``: the tag, and the image with its
    intermediate images when no container needs them; the notebooks list this root's images)."""
    made = []

    def image(ref):
        made.append(ref)
        return ref

    yield image
    if made:
        labtool("rmi", "-f", *made)
