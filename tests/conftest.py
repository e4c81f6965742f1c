"""Shared fixtures: root only, a temporary labtool root, and the host-state guard.

The guard records what labtool could leave behind on the host before the whole run and
compares after it: mounts, network links, network namespaces, cgroups, iptables rules,
the hostname, and processes in other PID namespaces or running labtool. Any difference
fails the run, naming what was left.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    if os.geteuid() != 0:
        pytest.exit("labtool's tests need root (namespaces, mounts, cgroups): run them with sudo", returncode=1)


# --- host state -----------------------------------------------------------------------

def _mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted({(line.split()[4], line.split(" - ")[1].split()[0]) for line in f})


def _cgroups():
    found = set()
    with open("/proc/self/mountinfo") as f:
        tops = [line.split()[4] for line in f if line.split(" - ")[1].split()[0] in ("cgroup", "cgroup2")]
    for top in tops:
        for dirpath, dirs, _ in os.walk(top):
            if "labtool" in dirpath:
                found.add(dirpath)
    return sorted(found)


def _iptables():
    if not shutil.which("iptables-save"):
        return []
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line.split(" [")[0] for line in out.splitlines() if line and not line.startswith("#")]


def _foreign_processes():
    """Processes in another PID namespace than ours, or running labtool on our root."""
    mine = os.readlink("/proc/self/ns/pid")
    our_root = f"LABTOOL_ROOT={os.environ.get('LABTOOL_ROOT', '')}".encode()
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
        runs_labtool = "labtool" in argv or any(a.endswith("/labtool") for a in argv[:2])
        if runs_labtool and ns == mine:   # another lab or benchmark may run next to the tests
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    runs_labtool = our_root in f.read().split(b"\0")
            except OSError:
                continue
        if ns != mine or runs_labtool:
            found.add((int(pid), " ".join(argv)[:80]))
    return found


def host_state():
    return {
        "mounts": _mounts(),
        "links": sorted(os.listdir("/sys/class/net")),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
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
        elif before[key] != after[key]:
            added = [x for x in after[key] if x not in before[key]] if isinstance(after[key], list) else after[key]
            gone = [x for x in before[key] if x not in after[key]] if isinstance(before[key], list) else before[key]
            problems.append(f"{key} changed: added {added}, gone {gone}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def labtool_root():
    """A labtool root of the test run's own, and the guard that the host is left clean."""
    # like /var/lib/labtool: others may pass through, so --userns (uid 100000) can reach it
    root = tempfile.mkdtemp(prefix="labtool-test-")
    os.chmod(root, 0o711)
    old = os.environ.get("LABTOOL_ROOT")
    os.environ["LABTOOL_ROOT"] = root
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    before = host_state()
    made = labtool("run", "--rm", "busybox", "true")   # the base image, made once for the run
    assert made.returncode == 0, made.stderr
    yield root
    problems = host_state_diff(before, host_state())
    if problems:   # fail, but first take it down the way a user would
        problems.append("labtool reset said: " + labtool("reset").stdout.strip().replace("\n", "; "))
    if old is None:
        os.environ.pop("LABTOOL_ROOT")
    else:
        os.environ["LABTOOL_ROOT"] = old
    if not problems:
        shutil.rmtree(root)
    assert not problems, "the tests left things on the host:\n" + "\n".join(problems)


# --- running labtool the way a user does ------------------------------------------------

def labtool(*args, input=None, timeout=60, env=None):
    """Run ``python -m labtool ARGS`` of this checkout; return the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "labtool", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def run():
    return labtool


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
    """Image names for a test; untagged after it (the notebooks list the images of this root)."""
    from labtool.images import store

    made = []

    def image(ref):
        made.append(ref)
        return ref

    yield image
    for ref in made:
        store.untag(ref)
