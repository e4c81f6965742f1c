"""``labtool stats``: what each running container uses, read from its cgroup.

Docker's numbers, computed the way ``docker stats`` computes them:

    CPU %      CPU time the cgroup used / CPU time the whole machine had, between two
               samples, times the number of CPUs (so 2 busy CPUs show 200%)
    MEM USAGE  the cgroup's memory minus its inactive file cache (pages the kernel can
               drop at once), against the limit (or the machine's memory if none)
    NET I/O    bytes received / sent on the container's interfaces (not lo)
    BLOCK I/O  bytes read / written to block devices
    PIDS       processes and threads in the cgroup
"""

import os
import time

from labtool import cgroups, units
from labtool.engine import containers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_ns():
    """All CPU time of all CPUs since boot, in ns (the first line of /proc/stat, man 5 proc)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(v) for v in fields[:8]) * 1_000_000_000 // CLOCK_TICKS


def machine_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def network_bytes(pid):
    """(received, sent) on the interfaces of ``pid``'s network namespace, lo left out."""
    received = sent = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, numbers = line.partition(":")
                if name.strip() != "lo":
                    values = numbers.split()
                    received += int(values[0])
                    sent += int(values[8])
    except OSError:
        pass
    return received, sent


def running():
    """[(record, pid, cgroup)] of the running containers that have a cgroup."""
    found = []
    for record in containers.all_records():
        pid = record.running_pid
        cgroup = cgroups.find(record.id) if pid else None
        if cgroup:
            found.append((record, pid, cgroup))
    return found


def sample(targets):
    """One reading of every target: ({id: cgroup numbers}, machine CPU ns)."""
    numbers = {}
    for record, pid, cgroup in targets:
        try:
            numbers[record.id] = dict(cgroup.stats(), net=network_bytes(pid))
        except OSError:
            pass                            # it stopped between listing and reading
    return numbers, machine_cpu_ns()


def measure(targets, interval=1.0):
    """Two samples ``interval`` apart; one row of numbers per container still running."""
    first, machine_before = sample(targets)
    time.sleep(interval)
    second, machine_after = sample(targets)
    ncpus = len(cgroups.online_cpus())
    host_memory = machine_memory()
    rows = []
    for record, _pid, _cgroup in targets:
        if record.id not in first or record.id not in second:
            continue
        before, now = first[record.id], second[record.id]
        machine_delta = machine_after - machine_before
        cpu = (now["cpu_ns"] - before["cpu_ns"]) / machine_delta * ncpus * 100 if machine_delta > 0 else 0.0
        limit = now["limit"] if 0 < now["limit"] < host_memory else host_memory
        usage = max(now["memory"] - now["inactive_file"], 0)
        rows.append({"id": record.id, "name": record.name, "cpu_percent": cpu, "memory": usage,
                     "limit": limit, "memory_percent": usage / limit * 100 if limit else 0.0,
                     "net": now["net"], "block": (now["block_read"], now["block_written"]),
                     "pids": now["pids"]})
    return rows


HEADER = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]


def table(rows):
    """The rows as docker stats prints them: columns padded to the widest cell, 3 spaces apart."""
    cells = [HEADER] + [[r["id"][:12], r["name"], f"{r['cpu_percent']:.2f}%",
                         f"{units.bytes_size(r['memory'])} / {units.bytes_size(r['limit'])}",
                         f"{r['memory_percent']:.2f}%",
                         f"{units.human_size(r['net'][0])} / {units.human_size(r['net'][1])}",
                         f"{units.human_size(r['block'][0])} / {units.human_size(r['block'][1])}",
                         str(r["pids"])] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells)
