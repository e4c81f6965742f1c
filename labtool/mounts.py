"""Reading the mount table, and unmounting what labtool mounted.

``/proc/self/mountinfo`` (man 5 proc) lists every mount this process can see, one per
line: id, parent id, major:minor, root, mount point, options, ... ``-`` fstype source.
"""

import os
import re

from labtool import syscalls


def _unescape(field):
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...);
    # only those: any other character, non-ASCII included, is written as it is
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def mountinfo(pid="self"):
    """The mount table as a list of dicts with id, parent, mountpoint, fstype, source."""
    result = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            result.append({"id": int(fields[0]), "parent": int(fields[1]), "root": _unescape(fields[3]),
                           "mountpoint": _unescape(fields[4]), "options": fields[5],
                           "propagation": " ".join(fields[6:]),
                           "fstype": rest[0] if rest else "", "source": rest[1] if len(rest) > 1 else ""})
    return result


def mounts_under(path):
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    path = os.path.realpath(path)
    found = [m["mountpoint"] for m in mountinfo()
             if m["mountpoint"] == path or m["mountpoint"].startswith(path.rstrip("/") + "/")]
    return sorted(found, key=len, reverse=True)


def unmount_under(path):
    """Detach every mount at or below ``path``; return how many there were."""
    found = mounts_under(path)
    for mountpoint in found:
        try:
            syscalls.umount2(mountpoint, syscalls.MNT_DETACH)
        except OSError:
            pass
    return len(found)
