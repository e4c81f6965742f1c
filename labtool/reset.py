"""``labtool reset``: remove every container and host object labtool made.

Everything labtool creates on the host is named so it can be found again (DESIGN.md):

    mounts           anything mounted below the labtool root (/var/lib/labtool, /run/labtool)
    processes        containers still running (their PID 1 is recorded in state.json)
    cgroups          the ``labtool`` cgroup in every hierarchy, with everything under it;
                     under systemd the units labtool.slice, labtool-*.slice, labtool-*.scope
    network          networks, bridges ``lt*``, veth ``ltv*``, network namespaces ``lt-*``
    iptables         chains named ``LABTOOL*`` and the rules that jump to them
                     (with LABTOOL_ROOT: only that root's links, networks and chains)
    state            containers and volumes (images too with ``--all``)

Between two groups of learners a lecturer runs ``sudo labtool reset``.
"""

import os
import shutil
import signal
import subprocess

from labtool import mounts, paths


def _kill_containers():
    """SIGKILL the PID 1 of every container still running (checked by its start time, so a
    reused pid number is never hit)."""
    from labtool.engine import containers

    said = []
    for record in containers.all_records():
        pid = record.running_pid
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                said.append(f"killed container {record.id[:12]} (pid {pid})")
            except ProcessLookupError:
                pass
    return said


def _own_containers():
    """None (everything labtool made is ours to remove), or with ``LABTOOL_ROOT`` set (a test
    run, a benchmark) the ids of that root's own containers, so that a reset there never kills
    another root's containers."""
    if not os.environ.get("LABTOOL_ROOT"):
        return None
    top = paths.containers_dir()
    return set(os.listdir(top)) if os.path.isdir(top) else set()


def _cgroup_roots(own):
    """The ``labtool`` cgroups to remove: in every mounted hierarchy, all of it; or, for
    ``own`` ids, only those containers' cgroups."""
    for m in mounts.mountinfo():
        if m["fstype"] in ("cgroup", "cgroup2"):
            path = os.path.join(m["mountpoint"], "labtool")
            if not os.path.isdir(path):
                continue
            if own is None:
                yield path
                continue
            for name in sorted(own & set(os.listdir(path))):
                yield os.path.join(path, name)


def _remove_cgroup_tree(top):
    """rmdir a cgroup tree bottom-up, after killing whatever still runs in it."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                for pid in f.read().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        except OSError:
            pass
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _systemd_units(own):
    """Under systemd (cgroup v2): the labtool units it has loaded, all of them, or for ``own``
    ids only those containers' scopes and slices; and labtool.slice is stopped only when
    nothing is left in it (``systemd.Tree.stop_slice``)."""
    from labtool.cgroups import systemd

    if not systemd.running():
        return []
    units = systemd.leftover_units()
    if own is None:
        return units
    wanted = {name for cid in own for name in systemd.unit_names(cid)}
    return [u for u in units if u in wanted]


def _stop_units(units):
    """``systemctl stop``: it waits until systemd has stopped them (and removed their cgroups);
    SIGKILL first, to what may still run in a scope."""
    scopes = [u for u in units if u.endswith(".scope")]
    if scopes:
        subprocess.run(["systemctl", "kill", "--signal=SIGKILL", *scopes], capture_output=True)
    subprocess.run(["systemctl", "stop", *units], capture_output=True)


def _stop_labtool_slice_if_empty():
    from labtool import cgroups
    from labtool.cgroups import systemd

    if systemd.running() and cgroups.layout() == "v2":
        mount = [m for m, fstype, _ in cgroups.mounts() if fstype == "cgroup2"][0]
        systemd.Tree(mount).stop_slice()


def _netns():
    return [n for n in os.listdir("/run/netns") if n.startswith("lt-")] if os.path.isdir("/run/netns") else []


def _remove_netns(name):
    path = os.path.join("/run/netns", name)
    mounts.unmount_under(path)
    os.unlink(path)


def _iptables_chains():
    """(table, chain) for every LABTOOL* chain, in the iptables on PATH."""
    if not shutil.which("iptables"):
        return []
    found = []
    for table in ("filter", "nat"):
        out = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        found += [(table, line.split()[1]) for line in out.splitlines()
                  if line.startswith("-N LABTOOL")]
    return found


def _remove_iptables_chain(table, chain):
    out = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
    for line in out.splitlines():          # first the rules that jump to it, in any chain
        parts = line.split()
        if parts[:1] == ["-A"] and f"-j {chain}" in line:
            subprocess.run(["iptables", "-w", "-t", table, "-D", *parts[1:]], check=False)
    subprocess.run(["iptables", "-w", "-t", table, "-F", chain], check=False)
    subprocess.run(["iptables", "-w", "-t", table, "-X", chain], check=False)


def _records():
    from labtool.engine import containers

    return containers.all_records()


def _forget_network(record):
    """A container's veth pairs, rules and addresses (its processes are gone by now)."""
    from labtool import network

    network.cleanup(record.id)


def _reset_network(own_root):
    """The networks of this root and their bridges, this root's links and iptables rules
    (``network.reset``); without LABTOOL_ROOT every ``lt*`` link."""
    from labtool import network

    return network.reset(own_root)


def reset(images=False):
    """Remove everything; return one line per thing removed."""
    from labtool.engine import daemon

    said = ["stopped the labtool daemon"] if daemon.stop_running() else []
    said += _kill_containers()
    for top in (paths.lib_dir(), paths.run_dir()):
        if os.path.isdir(top):
            n = mounts.unmount_under(top)
            if n:
                said.append(f"unmounted {n} mount(s) under {top}")
    own = _own_containers()
    units = _systemd_units(own)
    if units:
        _stop_units(units)
        said.append(f"stopped systemd units {' '.join(units)}")
    if own is not None:
        _stop_labtool_slice_if_empty()
    for top in list(_cgroup_roots(own)):
        _remove_cgroup_tree(top)
        said.append(f"removed cgroup {top}")
        parent = os.path.dirname(top)
        if os.path.basename(parent) == "labtool":
            try:
                os.rmdir(parent)            # the last container's cgroup takes the parent along
            except OSError:
                pass                        # other containers still live there
    for record in _records():
        try:
            _forget_network(record)
        except Exception as e:       # go on: reset must get through, and says what it could not do
            said.append(f"could not undo the network of {record.id[:12]}: {e}")
    if own is None:
        for name in _netns():
            _remove_netns(name)
            said.append(f"removed network namespace {name}")
    said += _reset_network(own is not None)
    if own is None:
        for table, chain in _iptables_chains():
            _remove_iptables_chain(table, chain)
            said.append(f"removed iptables chain {chain} ({table})")
    doomed = [paths.containers_dir(), paths.removing_dir(), os.path.join(paths.lib_dir(), "volumes"),
              os.path.join(paths.lib_dir(), "networks"), paths.run_dir()]
    if images:
        doomed += [paths.images_dir(), paths.layers_dir(), os.path.join(paths.lib_dir(), "init")]
    for path in doomed:
        if os.path.isdir(path):
            if mounts.mounts_under(path):
                said.append(f"kept {path}: something is still mounted in it")
                continue
            had_content = bool(os.listdir(path))
            shutil.rmtree(path)
            if had_content:
                said.append(f"removed {path}")
    return said or ["nothing to remove"]
