"""Which device files a container may use: the rules of the devices cgroup.

A device file is only a name for a (type, major, minor) triple: ``mknod /tmp/disk b 8 0``
makes a new name for the host's first disk anywhere. So hiding /dev is not enough; the
kernel must refuse the *device*, whatever the path. That is the devices cgroup's job
(Documentation/admin-guide/cgroup-v1/devices.rst): a list of rules ::

    type  c (character), b (block) or a (all)
    major:minor   numbers, or * for any
    access  r (read), w (write), m (mknod)

cgroup v1 keeps the list in ``devices.allow`` / ``devices.deny``; cgroup v2 has no such
files: a small BPF program of type BPF_PROG_TYPE_CGROUP_DEVICE, attached to the cgroup,
answers "allow?" for every open and mknod (see ``bpf.py``).

Docker starts from "deny everything" and allows the few devices every program expects;
``--device /dev/xyz`` adds one more.
"""

import os
import stat
from dataclasses import dataclass

from labtool.errors import UsageError


@dataclass(frozen=True)
class DeviceRule:
    """One rule: allow (or deny) ``access`` to devices of ``type`` major:minor.

    ``major``/``minor`` None means any (the ``*`` of devices.allow).
    """

    allow: bool
    type: str = "a"          # "c", "b" or "a" (all)
    major: int | None = None
    minor: int | None = None
    access: str = "rwm"      # any of r, w, m

    def v1_line(self):
        """The line written to devices.allow or devices.deny: ``c 1:3 rwm``."""
        if self.type == "a":
            return "a"          # "a" means a *:* rwm; the kernel takes it alone
        number = lambda n: "*" if n is None else str(n)   # noqa: E731
        return f"{self.type} {number(self.major)}:{number(self.minor)} {self.access}"


# Docker's defaults (man docker-run, "--device-cgroup-rule"): make any node, open only these.
DEFAULT_RULES = [
    DeviceRule(False),                               # first, deny everything
    DeviceRule(True, "c", None, None, "m"),          # mknod of any node is harmless: opening is checked
    DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3),                     # /dev/null
    DeviceRule(True, "c", 1, 5),                     # /dev/zero
    DeviceRule(True, "c", 1, 7),                     # /dev/full
    DeviceRule(True, "c", 1, 8),                     # /dev/random
    DeviceRule(True, "c", 1, 9),                     # /dev/urandom
    DeviceRule(True, "c", 5, 0),                     # /dev/tty
    DeviceRule(True, "c", 5, 1),                     # /dev/console
    DeviceRule(True, "c", 5, 2),                     # /dev/ptmx
    DeviceRule(True, "c", 136, None),                # /dev/pts/*: the container's terminals
]


@dataclass(frozen=True)
class Device:
    """``--device HOST[:CONTAINER][:PERMISSIONS]``: a host device given to the container."""

    host_path: str
    container_path: str
    access: str
    type: str
    major: int
    minor: int
    mode: int                # permission bits of the host's node

    @property
    def rule(self):
        return DeviceRule(True, self.type, self.major, self.minor, self.access)


def parse_device(text):
    """Parse ``--device /dev/xyz[:/dev/abc][:rwm]`` the way docker does."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"invalid --device '{text}': use HOST[:CONTAINER][:rwm]")
    host = parts[0]
    container, access = host, "rwm"
    if len(parts) == 3:
        container, access = parts[1], parts[2]
    elif len(parts) == 2:
        if parts[1].startswith("/"):
            container = parts[1]
        else:
            access = parts[1]
    if not access or set(access) - set("rwm"):
        raise UsageError(f"invalid --device permissions '{access}': use any of r, w, m")
    if not container.startswith("/"):
        raise UsageError(f"invalid --device '{text}': the container path must be absolute")
    try:
        st = os.stat(host)
    except OSError as e:
        raise UsageError(f"--device {host}: {e.strerror.lower()}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise UsageError(f"--device {host}: not a device file")
    return Device(host, container, access, kind, os.major(st.st_rdev), os.minor(st.st_rdev),
                  stat.S_IMODE(st.st_mode))


def rules_for(devices):
    """All rules of a container: Docker's defaults, then one per ``--device``."""
    return DEFAULT_RULES + [d.rule for d in devices]
