"""The container store: one directory per container under ``containers/``, plain JSON.

    containers/<id>/config.json         the ContainerSpec it was made from
    containers/<id>/state.json          {"Status": "running", "Pid": 1234, "ExitCode": ...}
    containers/<id>/mounts.json         what was mounted where (``docker inspect``'s "Mounts")
    containers/<id>/<id>-json.log       what it printed (``engine/logs.py``)

A container is found by its full id, a unique prefix of it, or its name. Several
``labtool`` commands may change one container at once (``stop`` while its supervisor
records an exit): every change of state.json holds the container's lock (flock(2) on a
file under /run/labtool/locks), and is written to a new file renamed over the old one,
so that a reader never sees half a file.
"""

import json
import os
import time
from dataclasses import dataclass, field

from labtool import paths
from labtool.errors import ContainerNotFound, LabtoolError

# Docker's states (``docker ps -f status=...``)
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


@dataclass
class Record:
    id: str
    config: dict
    state: dict
    mounts: list = field(default_factory=list)

    @property
    def name(self):
        return self.config.get("name", "")

    @property
    def running_pid(self):
        """The pid of the container's first process if it is still running, else 0."""
        if self.state.get("Status") not in ("running", "paused"):
            return 0
        return _alive(self.state.get("Pid"), self.state.get("PidStartTime"))

    @property
    def supervisor_pid(self):
        """The pid of the process that watches over the container, if it is alive, else 0."""
        return _alive(self.state.get("SupervisorPid"), self.state.get("SupervisorStartTime"))

    @property
    def status(self):
        """created, running, paused, restarting, exited, removing or dead.

        "dead" is Docker's word for a container whose record says it runs, while nothing
        runs: its supervisor was killed (kill -9), or the machine rebooted.
        """
        status = self.state.get("Status", "created")
        if status in ("running", "paused", "restarting") and not self.supervisor_pid:
            return "dead" if not self.running_pid else status
        return status           # (its PID 1 may have just ended: the supervisor is writing it down)


def _alive(pid, start_time):
    """``pid`` if that process still exists *and* is the same one (a pid number is reused
    by a new process some time after the old one is gone: the start time tells them apart)."""
    if not pid or pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):               # ended; only its exit status waits to be read
            return 0
        return pid if int(fields[19]) == (start_time or int(fields[19])) else 0
    except (OSError, IndexError, ValueError):
        return 0


def pid_start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_json(path, data):
    """Write to a new file, then rename it over the old one: readers see old or new, never half.

    One line, as Docker writes its own (``python3 -m json.tool FILE`` shows it indented):
    ``json.dumps`` without ``indent`` is done by the json module's C encoder, ten times
    faster than the Python one that indenting needs; a container start writes four such
    files. ``default=vars``: a dataclass (the spec) is written as its fields."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data, default=vars))
    os.replace(tmp, path)


def lock(name):
    """Hold the lock ``name`` (a container id, or "names") against other labtool processes."""
    return paths.locked(os.path.join(paths.run_dir(), "locks", name))


def state_path(container_id):
    return os.path.join(paths.container_dir(container_id), "state.json")


def update_state(container_id, decide=None, **changes):
    """Change some fields of a container's state.json (under its lock); return the new state.
    ``decide(state)``, if given, returns more changes, decided on the state as it is under
    the lock. A container directory that is gone (removed meanwhile) is left alone."""
    with lock(container_id):
        if not os.path.isdir(paths.container_dir(container_id)):
            return {}
        state = read_json(state_path(container_id))
        state.update(changes)
        if decide:
            state.update(decide(state))
        write_json(state_path(container_id), state)
        return state


def load(container_id):
    here = paths.container_dir(container_id)
    return Record(container_id, read_json(f"{here}/config.json"), read_json(f"{here}/state.json"),
                  read_json(f"{here}/mounts.json") or [])


def all_records():
    top = paths.containers_dir()
    if not os.path.isdir(top):
        return []
    return [load(cid) for cid in sorted(os.listdir(top)) if os.path.isdir(os.path.join(top, cid))]


def find(name_or_id):
    """The container with this name, id, or unique id prefix."""
    records = all_records()
    for r in records:
        if r.name == name_or_id or r.id == name_or_id:
            return r
    matches = [r for r in records if name_or_id and r.id.startswith(name_or_id)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise LabtoolError(f"multiple containers match '{name_or_id}': give more of the id")
    raise ContainerNotFound(name_or_id)


def find_running(name_or_id):
    """The record and pid of a running container, or a clear error."""
    r = find(name_or_id)
    pid = r.running_pid
    if not pid:
        raise LabtoolError(f"container {name_or_id} is not running")
    return r, pid


def check_name_free(name):
    for r in all_records():
        if r.name == name:
            raise LabtoolError(f'Conflict. The container name "/{name}" is already in use by container '
                               f'"{r.id}". You have to remove (or rename) that container to be able to '
                               f'reuse that name.')


def wait_for(container_id, condition, timeout):
    """Poll the container's record until ``condition(record)`` holds; return the record
    (or the last one seen after ``timeout`` seconds); None once the container is gone."""
    deadline = time.monotonic() + timeout
    while True:
        if not os.path.isdir(paths.container_dir(container_id)):
            return None
        record = load(container_id)
        if condition(record) or time.monotonic() > deadline:
            return record
        time.sleep(0.01)


def _timestamp(seconds):
    """Docker's time format (RFC 3339 in UTC), or its zero time when it never happened."""
    import datetime

    if not seconds:
        return "0001-01-01T00:00:00Z"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def inspect(record):
    """A container as ``docker inspect`` shows it (the fields labtool has so far)."""
    config, state = record.config, record.state
    pid = record.running_pid
    resources = config.get("resources", {})
    capabilities = config.get("capabilities", {})
    return {
        "Id": record.id,
        "Name": "/" + record.name if record.name else "",
        "Image": config.get("image", ""),
        "Created": _timestamp(state.get("Created")),
        "State": {
            "Status": record.status,
            "Running": record.status in ("running", "paused"),
            "Paused": record.status == "paused",
            "Restarting": record.status == "restarting",
            "OOMKilled": state.get("OOMKilled", False),
            "Dead": record.status == "dead",
            "Pid": pid,
            "ExitCode": state.get("ExitCode", 0),
            "Error": state.get("Error", "") or ("its supervisor is gone" if record.status == "dead" else ""),
            "StartedAt": _timestamp(state.get("StartedAt")),
            "FinishedAt": _timestamp(state.get("FinishedAt")),
            # labtool's own field (Docker has none): the capabilities PID 1 holds right now
            "EffectiveCaps": _effective_caps(pid),
        },
        "RestartCount": state.get("RestartCount", 0),
        "LogPath": os.path.join(paths.container_dir(record.id), f"{record.id}-json.log"),
        "Config": {
            "Hostname": config.get("hostname", "") or record.id[:12],
            "Env": config.get("process", {}).get("env", []),
            "Cmd": config.get("process", {}).get("args", []),
            "Image": config.get("image", ""),
            "WorkingDir": config.get("process", {}).get("cwd", ""),
            "User": config.get("process", {}).get("user", ""),
            "Entrypoint": config.get("entrypoint"),
            "Tty": config.get("tty", False),
            "OpenStdin": config.get("interactive", False),
        },
        "HostConfig": {
            "Memory": resources.get("memory", 0),
            "MemorySwap": resources.get("memory_swap", 0),
            "CpuShares": resources.get("cpu_shares", 0),
            "NanoCpus": int(resources.get("cpus", 0) * 1e9),
            "CpusetCpus": resources.get("cpuset_cpus", ""),
            "PidsLimit": resources.get("pids_limit", 0),
            "Devices": resources.get("devices", []),
            "Init": config.get("init", False),
            "RestartPolicy": _restart_policy(config.get("restart", "no")),
            "AutoRemove": config.get("remove", False),
            "ReadonlyRootfs": config.get("read_only", False),
            "CapAdd": capabilities.get("add") or None,      # as given, like docker: null when none
            "CapDrop": capabilities.get("drop") or None,
            "SecurityOpt": ["no-new-privileges"] if capabilities.get("no_new_privileges") else None,
            "NetworkMode": config.get("namespaces", {}).get("net", "bridge"),
            "PortBindings": _port_bindings(config),
            "PublishAllPorts": config.get("network", {}).get("publish_all", False),
            "Links": config.get("network", {}).get("links") or None,
            "Dns": config.get("network", {}).get("dns", []),
            "ExtraHosts": config.get("network", {}).get("add_hosts") or None,
            "Privileged": config.get("privileged", False),
        },
        "Mounts": record.mounts,
        "GraphDriver": _graph_driver(record.id),
        "NetworkSettings": _network_settings(record),
    }


def _network_settings(record):
    """Step 05: addresses, networks and published ports (``network.settings``)."""
    from labtool import network

    return network.settings(record)


def _effective_caps(pid):
    """The names in CapEff of a running container's PID 1 (read from /proc: the truth, after
    --cap-add, --cap-drop and --user); None when it does not run."""
    from labtool.capabilities import names_of, read_sets

    try:
        return names_of(read_sets(pid)["CapEff"]) if pid else None
    except (OSError, KeyError):
        return None


def _port_bindings(config):
    """-p as asked, in Docker's shape: {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}."""
    from labtool.errors import LabtoolError
    from labtool.network import ports

    found = {}
    try:
        bindings = ports.parse_all(config.get("network", {}).get("publish", []))
    except LabtoolError:
        bindings = []
    for b in bindings:
        found.setdefault(b.key, []).append({"HostIp": b.host_ip, "HostPort": str(b.host_port or "")})
    return found


def _restart_policy(text):
    name, _, count = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _graph_driver(container_id):
    """The storage driver and its directories, as docker inspect's GraphDriver shows them."""
    from labtool import overlay

    storage = overlay.storage_of(paths.container_dir(container_id))
    data = {key: (":".join(reversed(value)) if key == "LowerDir" else value)   # top layer first
            for key, value in storage.items() if key.endswith("Dir")}
    return {"Name": storage.get("Driver", ""), "Data": data}
