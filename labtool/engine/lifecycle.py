"""The container lifecycle: Docker's state machine, one function per command.

::

                 create            start                 (exit)
    (nothing) ----------> created ------> running -------------------> exited
                                          |   ^  pause / unpause          |  start, restart
                                          v   |                           |
                                          paused        restart policy:   v
                                                     exited -> restarting -> running

    rm removes a created or exited container (rm -f: a running one too, killed first);
    a record that says "running" while nothing runs (its supervisor was killed) is "dead".

Every command works on the plain files of ``engine/containers.py``; starting means
handing the container to a supervisor (``engine/supervisor.py``), which outlives the
command. Stopping means a signal to the container's PID 1: SIGTERM, then SIGKILL after
a grace period (man 7 signal: SIGKILL cannot be caught, which is why exit code 137 =
128 + 9 means "killed").
"""

import os
import signal
import subprocess
import time

from labtool import paths, process, runtime
from labtool.engine import containers, names, supervisor
from labtool.errors import LabtoolError, UsageError


def create(spec, **state):
    """``labtool create``: a container that exists but has not run yet (status "created").
    ``state``: more fields for its first state.json (``labtool run``: its supervisor)."""
    if spec.restart != "no":
        supervisor.parse_policy(spec.restart)
        if spec.remove:
            raise UsageError("Conflicting options: --restart and --rm")
    with containers.lock("names"):           # two creates at once must not take one name
        if not spec.name:
            spec.name = names.generate({r.name for r in containers.all_records()})
        c = runtime.new_container(spec)
        containers.update_state(c.id, Status="created", Created=time.time(), RestartCount=0, **state)
    return c


def start(name_or_id):
    """``labtool start``: hand a created or exited container to a new supervisor."""
    record = containers.find(name_or_id)
    if record.status in ("running", "paused", "restarting"):
        return record                          # docker start on a running container: nothing to do
    if record.status == "dead":
        cleanup(record)
    containers.update_state(record.id, StoppedByUser=False, Status="created")
    supervisor.spawn(record.id)
    return record


def start_attached(name_or_id):
    """``labtool start -a -i``: supervise the container from this process, as ``run`` does
    without -d: its output comes to our terminal and, if it was created with -i, our stdin
    goes to it. Returns its exit code."""
    record = containers.find(name_or_id)
    if record.status in ("running", "paused", "restarting"):
        raise LabtoolError(f"container {record.name} is already running: labtool cannot attach "
                           f"to a running container (use labtool logs -f, or labtool exec -it)")
    if record.status == "dead":
        cleanup(record)
    containers.update_state(record.id, StoppedByUser=False, Status="created")
    return supervisor.supervise_attached(runtime.load(record.id))


def stop(name_or_id, timeout=10, sig=None):
    """``labtool stop``: SIGTERM (or the image's STOPSIGNAL) to PID 1, SIGKILL after ``timeout``
    seconds; wait till it is down."""
    record = containers.find(name_or_id)
    sig = sig or _stop_signal(record)
    containers.update_state(record.id, StoppedByUser=True)
    if record.status == "paused":
        unpause(record.id)                     # a frozen process cannot act on SIGTERM
    pid = record.running_pid
    if pid:
        _signal(pid, sig)
        if not _wait_gone(pid, timeout):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
    containers.wait_for(record.id, lambda r: r.status not in ("running", "paused", "restarting"), 10)
    return record


def _stop_signal(record):
    """The STOPSIGNAL of the container's image (Dockerfile ``STOPSIGNAL SIGINT``), else SIGTERM."""
    from labtool import overlay
    from labtool.images import store

    image_id = overlay.storage_of(paths.container_dir(record.id)).get("Image")
    try:
        image = store.find_by_id(image_id) if image_id else None
    except LabtoolError:
        image = None
    name = ((image.config.get("config") or {}).get("StopSignal") or "") if image else ""
    return (process.parse_signal(name) if name else None) or signal.SIGTERM


def kill(name_or_id, sig=signal.SIGKILL):
    """``labtool kill [-s SIG]``: send a signal to the container's PID 1 (default SIGKILL)."""
    record = containers.find(name_or_id)
    pid = record.running_pid
    if not pid:
        raise LabtoolError(f"Cannot kill container: {name_or_id}: container {record.id} is not running")
    if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        containers.update_state(record.id, StoppedByUser=True)   # as docker: no restart after kill
    if record.status == "paused" and sig != signal.SIGKILL:
        unpause(record.id)
    _signal(pid, sig)
    if sig == signal.SIGKILL:
        containers.wait_for(record.id, lambda r: r.status not in ("running", "paused"), 10)
    return record


def restart(name_or_id, timeout=10):
    """``labtool restart``: stop (if running), then start."""
    record = stop(name_or_id, timeout)
    return start(record.id)


def pause(name_or_id, frozen=True):
    """``labtool pause``: freeze every process of the container (the freezer cgroup)."""
    from labtool import cgroups

    record = containers.find(name_or_id)
    if not record.running_pid:
        raise LabtoolError(f"Container {record.id} is not running")
    if (record.status == "paused") == frozen:
        raise LabtoolError(f"Container {record.id} is {'already' if frozen else 'not'} paused")
    cgroup = cgroups.find(record.id)
    if cgroup is None:
        raise LabtoolError("pause needs the container's cgroup (step 03); it runs with --upto before it")
    cgroup.freeze(frozen)
    containers.update_state(record.id, Status="paused" if frozen else "running")
    return record


def unpause(name_or_id):
    return pause(name_or_id, frozen=False)


def wait(name_or_id):
    """``labtool wait``: block until the container stops; its exit code."""
    record = containers.find(name_or_id)
    while True:
        record = containers.wait_for(record.id, lambda r: r.status in ("exited", "dead", "created"), 3600)
        if record is None:
            raise LabtoolError(f"No such container: {name_or_id}")
        if record.status != "created" or not record.supervisor_pid:
            return record.state.get("ExitCode", 0)


def rename(name_or_id, new_name):
    """``labtool rename``: a new name, if it is free."""
    with containers.lock("names"):
        record = containers.find(name_or_id)
        containers.check_name_free(new_name)
        path = os.path.join(paths.container_dir(record.id), "config.json")
        config = containers.read_json(path)
        config["name"] = new_name
        containers.write_json(path, config)


def remove(name_or_id, force=False, volumes=False):
    """``labtool rm``: delete a container that is not running; ``force`` kills a running
    one first (SIGKILL, as ``docker rm -f``); ``volumes`` removes its anonymous volumes too."""
    record = containers.find(name_or_id)
    if record.status in ("running", "paused", "restarting") and not force:
        raise LabtoolError(f"You cannot remove a {record.status} container {record.id}. Stop the container "
                           f"before attempting removal or force remove (rm -f)")
    containers.update_state(record.id, Status="removing", StoppedByUser=True)
    pid = record.running_pid
    if pid:
        if record.state.get("Status") == "paused":
            pause(record.id, frozen=False)
        _signal(pid, signal.SIGKILL)
        _wait_gone(pid, 10)
    sup = record.supervisor_pid
    if sup and sup != os.getpid():
        _wait_gone(sup, 10)                    # it unmounts and removes the cgroup on its way out
    cleanup(record)
    runtime.remove(paths.container_dir(record.id), volumes=volumes)
    return record


def cleanup(record):
    """What a killed supervisor could not undo: the cgroup, mounts and network of a dead container."""
    from labtool import cgroups, mounts, network

    try:
        cgroup = cgroups.find(record.id)
        if cgroup is not None:
            cgroup.remove()
    except LabtoolError:
        pass
    mounts.unmount_under(paths.container_dir(record.id))
    network.cleanup(record.id)


def top(name_or_id):
    """``labtool top``: the container's processes, as ``ps -f`` on the host shows them."""
    from labtool import cgroups

    record = containers.find(name_or_id)
    pid = record.running_pid
    if not pid:
        raise LabtoolError(f"Container {record.id} is not running")
    cgroup = cgroups.find(record.id)
    pids = cgroup.pids() if cgroup else [pid]
    out = subprocess.run(["ps", "-f", "-p", ",".join(map(str, sorted(pids)))],
                         capture_output=True, text=True).stdout
    return out


def boot():
    """``labtool system boot`` (at machine start): restart what the policies say should run.

    ``always`` containers, and ``unless-stopped`` ones that were not stopped by hand;
    after a reboot every record that said "running" is "dead" (nothing survived)."""
    started = []
    for record in containers.all_records():
        policy, _ = supervisor.parse_policy(record.config.get("restart", "no"))
        if record.status in ("running", "paused", "restarting"):
            continue
        was_running = record.status == "dead"          # it ran when the machine went down
        stopped_by_hand = record.state.get("StoppedByUser", False)
        if policy == "always" or (policy == "unless-stopped" and was_running and not stopped_by_hand):
            start(record.id)
            started.append(record.name)
    return started


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid, timeout):
    """Until process ``pid`` has ended (True), or ``timeout`` seconds passed (False)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        import select

        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)
