"""Container logs in Docker's "json-file" format: one JSON object per line.

    {"log":"hello\\n","stream":"stdout","time":"2026-11-27T20:31:02.123456789Z"}

The supervisor (``supervisor.py``) reads what the container writes to its stdout and
stderr pipes and appends it here line by line, with the time it arrived. ``labtool
logs`` reads the file back; ``-f`` keeps reading as it grows (like ``tail -f``).
"""

import json
import os
import time

MAX_LINE = 16 * 1024        # a line longer than this is cut into pieces, as Docker does


def path(container_dir):
    container_id = os.path.basename(container_dir)
    return os.path.join(container_dir, f"{container_id}-json.log")


def timestamp(seconds=None):
    """RFC 3339 with nanoseconds, in UTC, as Docker writes log times."""
    seconds = time.time() if seconds is None else seconds
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e9):09d}Z"


class Writer:
    """Appends a container's output to its log file, one line per entry."""

    def __init__(self, container_dir):
        self.fd = os.open(path(container_dir), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.partial = {"stdout": b"", "stderr": b""}

    def write(self, stream, data):
        """Some bytes arrived on ``stream``: log every complete line (keep the rest)."""
        buffered = self.partial[stream] + data
        lines = buffered.split(b"\n")
        self.partial[stream] = lines.pop()            # after the last newline: not a line yet
        entries = [line + b"\n" for line in lines]
        while len(self.partial[stream]) >= MAX_LINE:
            entries.append(self.partial[stream][:MAX_LINE])
            self.partial[stream] = self.partial[stream][MAX_LINE:]
        self._append(stream, entries)

    def flush(self):
        """The stream ended: log what is left, even without a newline."""
        for stream, rest in self.partial.items():
            if rest:
                self._append(stream, [rest])
            self.partial[stream] = b""

    def _append(self, stream, entries):
        if not entries:
            return
        now = timestamp()
        text = "".join(json.dumps({"log": e.decode(errors="replace"), "stream": stream, "time": now},
                                  separators=(",", ":")) + "\n" for e in entries)
        os.write(self.fd, text.encode())

    def close(self):
        self.flush()
        os.close(self.fd)


def read(container_dir, tail=None):
    """The log entries so far, oldest first (the last ``tail`` of them if given)."""
    try:
        with open(path(container_dir)) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return [json.loads(line) for line in lines if line.strip()]


def size(container_dir):
    """How far the log goes now (``start -a`` follows from here)."""
    try:
        return os.path.getsize(path(container_dir))
    except FileNotFoundError:
        return 0


def follow(container_dir, tail=None, still_running=lambda: False, poll=0.05, offset=None):
    """Yield entries as they are written, until the container has stopped and the file
    has no more; like ``tail -f`` (``labtool logs -f``). With ``offset``: only what was
    written after that point of the file."""
    if offset is None:
        yield from read(container_dir, tail)
    while not os.path.exists(path(container_dir)):
        if not still_running():
            return
        time.sleep(poll)
    with open(path(container_dir)) as f:
        f.seek(offset if offset is not None else 0, os.SEEK_SET if offset is not None else os.SEEK_END)
        pending = ""
        while True:
            chunk = f.read()
            if chunk:
                pending += chunk
                *complete, pending = pending.split("\n")
                for line in complete:
                    if line.strip():
                        yield json.loads(line)
                continue
            if not still_running():
                rest = f.read()                       # what came between the two looks
                for line in (pending + rest).split("\n"):
                    if line.strip():
                        yield json.loads(line)
                return
            time.sleep(poll)
