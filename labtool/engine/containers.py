"""The container store: one directory per container under ``containers/``, plain JSON.

    containers/<id>/config.json   the ContainerSpec it was made from
    containers/<id>/state.json    {"Status": "running", "Pid": 1234, "ExitCode": ...}
    containers/<id>/mounts.json   what was mounted where (``docker inspect``'s "Mounts")

A container is found by its full id, a unique prefix of it, or its name.
"""

import json
import os
from dataclasses import dataclass, field

from labtool import paths
from labtool.errors import ContainerNotFound, LabtoolError


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
        pid = self.state.get("Pid") or 0
        if self.state.get("Status") != "running" or pid <= 0:
            return 0
        try:
            with open(f"/proc/{pid}/stat") as f:
                start_time = int(f.read().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            return 0
        # the same pid number could be a new process by now: compare its start time
        return pid if start_time == self.state.get("PidStartTime", start_time) else 0


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def all_records():
    top = paths.containers_dir()
    if not os.path.isdir(top):
        return []
    records = []
    for cid in sorted(os.listdir(top)):
        here = os.path.join(top, cid)
        records.append(Record(cid, read_json(f"{here}/config.json"), read_json(f"{here}/state.json"),
                              read_json(f"{here}/mounts.json") or []))
    return records


def find(name_or_id):
    """The container with this name, id, or unique id prefix."""
    records = all_records()
    for r in records:
        if r.name == name_or_id or r.id == name_or_id:
            return r
    matches = [r for r in records if len(name_or_id) >= 1 and r.id.startswith(name_or_id)]
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
                               f'"{r.id}". Remove it or give this one another name.')


def pid_start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


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
    return {
        "Id": record.id,
        "Name": "/" + record.name if record.name else "",
        "Image": config.get("image", ""),
        "State": {
            "Status": "running" if pid else state.get("Status", "created"),
            "Running": bool(pid),
            "Pid": pid,
            "ExitCode": state.get("ExitCode", 0),
            "OOMKilled": state.get("OOMKilled", False),
            "StartedAt": _timestamp(state.get("StartedAt")),
            "FinishedAt": _timestamp(state.get("FinishedAt")),
        },
        "Config": {
            "Hostname": config.get("hostname", "") or record.id[:12],
            "Env": config.get("process", {}).get("env", []),
            "Cmd": config.get("process", {}).get("args", []),
            "Image": config.get("image", ""),
            "WorkingDir": config.get("process", {}).get("cwd", ""),
            "User": config.get("process", {}).get("user", ""),
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
            "ReadonlyRootfs": config.get("read_only", False),
        },
        "Mounts": record.mounts,
        "GraphDriver": _graph_driver(record.id),
    }


def _graph_driver(container_id):
    """The storage driver and its directories, as docker inspect's GraphDriver shows them."""
    from labtool import overlay

    storage = overlay.storage_of(paths.container_dir(container_id))
    data = {key: (":".join(reversed(value)) if key == "LowerDir" else value)   # top layer first
            for key, value in storage.items() if key.endswith("Dir")}
    return {"Name": storage.get("Driver", ""), "Data": data}


def remove(name_or_id, force=False, volumes=False):
    """``labtool rm``: delete a container that has exited; ``force`` kills a running one
    first (SIGKILL, as ``docker rm -f``); ``volumes`` removes its anonymous volumes too."""
    import signal
    import time

    from labtool import runtime

    record = find(name_or_id)
    pid = record.running_pid
    if pid and not force:
        raise LabtoolError(f"You cannot remove a running container {record.id}. Stop the container "
                           f"before attempting removal or force remove (rm -f)")
    if pid:
        os.kill(pid, signal.SIGKILL)
        container_dir = paths.container_dir(record.id)
        state_file = os.path.join(container_dir, "state.json")
        deadline = time.time() + 10
        # wait for the labtool that runs it to unmount and say "exited" (or, --rm, to remove it)
        while time.time() < deadline and os.path.isdir(container_dir):
            if read_json(state_file).get("Status") != "running":
                break
            time.sleep(0.02)
    runtime.remove(paths.container_dir(record.id), volumes=volumes)
