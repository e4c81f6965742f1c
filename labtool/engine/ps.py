"""``labtool ps``: the container table, in Docker's columns and words.

    CONTAINER ID   IMAGE     COMMAND                  CREATED          STATUS                     PORTS     NAMES
    4f1c2b9d0e7a   busybox   "sh -c 'while true;…"   12 seconds ago   Up 11 seconds                        web
    9a8b7c6d5e4f   busybox   "false"                  2 minutes ago    Exited (1) 2 minutes ago             calm_turing
"""

import json
import time

from labtool.engine import containers

HEADER = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]


def human_duration(seconds):
    """Docker's words for a duration (go-units HumanDuration): "3 seconds", "About a minute"..."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(record, now=None):
    """The STATUS column: "Up 3 seconds", "Exited (137) 2 seconds ago", "Created"..."""
    now = now or time.time()
    state = record.state
    status = record.status
    if status == "running":
        return f"Up {human_duration(now - state.get('StartedAt', now))}"
    if status == "paused":
        return f"Up {human_duration(now - state.get('StartedAt', now))} (Paused)"
    if status == "restarting":
        return f"Restarting ({state.get('ExitCode', 0)}) {human_duration(now - state.get('FinishedAt', now))} ago"
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)}) {human_duration(now - state.get('FinishedAt', now))} ago"
    if status == "removing":
        return "Removal In Progress"
    if status == "dead":
        return "Dead"
    return "Created"


def command_text(record, full=False):
    """The COMMAND column: the command line in quotes, cut to 20 characters with "…"."""
    from labtool.images import store

    config = record.config
    args = config.get("process", {}).get("args", [])
    entrypoint = config.get("entrypoint")
    if entrypoint is None or not args:
        image = store.find(config.get("image", ""))
        if entrypoint is None:
            entrypoint = list(image.entrypoint) if image else []
        if not args and config.get("entrypoint") is None and image:
            args = list(image.cmd)
    words = list(entrypoint) + list(args)
    # Docker's daemon puts an argument with a space in single quotes: "sh -c 'echo hi'"
    text = " ".join(words[:1] + [f"'{w}'" if " " in w else w for w in words[1:]])
    if not full and len(text) > 20:
        text = text[:19] + "…"
    return json.dumps(text, ensure_ascii=False)


def matches(record, filters):
    """``-f name=web`` (part of the name), ``-f status=exited``, ``-f id=4f1c``. As in Docker,
    two values of one key are "either", different keys are "and"."""
    tests = {"name": lambda v: v in record.name, "status": lambda v: record.status == v,
             "id": lambda v: record.id.startswith(v)}
    for key in {k for k, _ in filters}:
        if not any(tests[key](v) for k, v in filters if k == key):
            return False
    return True


def rows(all_=False, filters=(), full=False):
    now = time.time()
    found = []
    records = sorted(containers.all_records(), key=lambda r: r.state.get("Created", 0), reverse=True)
    for record in records:
        if not (all_ or filters) and record.status not in ("running", "paused", "restarting"):
            continue
        if not matches(record, filters):
            continue
        created = record.state.get("Created", now)
        found.append([record.id if full else record.id[:12], record.config.get("image", ""),
                      command_text(record, full), f"{human_duration(now - created)} ago",
                      status_text(record, now), ports_text(record), record.name])
    return found


def ports_text(record):
    """PORTS: ``0.0.0.0:8080->80/tcp`` for each published port, ``443/tcp`` for one only exposed (step 05)."""
    from labtool.network import ports

    if record.status not in ("running", "paused"):
        return ""
    bindings = [ports.PortBinding.from_state(d) for d in record.state.get("Ports", [])]
    return ports.format_ps(bindings, record.state.get("Exposed", []))


def table(found):
    """Columns as Docker's tabwriter lays them out: the widest cell plus 3 spaces, at least 10."""
    lines = [HEADER] + found
    widths = [max(10, max(len(row[i]) for row in lines) + 3) for i in range(len(HEADER))]
    return "\n".join("".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)
