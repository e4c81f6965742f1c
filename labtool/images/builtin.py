"""Images labtool makes by itself, offline.

``busybox``: one static binary that is 269 programs (``sh``, ``ls``, ``ps``, ``ip`` ...),
picked by the name it is called by. The image is that binary from Debian's
``busybox-static`` package plus a link per applet and a minimal ``/etc``: about 2 MB.
Docker pulls ``busybox`` from a registry; the layer we make has the same idea and shape.
"""

import datetime
import os
import subprocess
import tarfile

from labtool.errors import LabtoolError
from labtool.images import store
from labtool.spec import DEFAULT_PATH

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""


def _dir(name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _file(name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def busybox_version():
    out = subprocess.run([BUSYBOX], capture_output=True, text=True).stdout
    return out.split("\n", 1)[0].strip()


def make_busybox(ref="busybox:latest"):
    """Make the ``busybox`` image from ``/bin/busybox`` and add it to the store."""
    if not os.path.exists(BUSYBOX):
        raise LabtoolError(f"cannot make the busybox image: {BUSYBOX} is missing "
                           "(apt-get install busybox-static, or run vagrant/provision.sh)")
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    dirs = ["bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "usr", "usr/bin",
            "usr/sbin", "sbin", "var", "var/spool", "var/spool/cron", "var/www"]
    files = [_dir(d, 0o1777 if d == "tmp" else 0o700 if d == "root" else 0o755) for d in dirs]
    files.append(_file("bin/busybox", binary, 0o755))
    files += [_file("etc/passwd", PASSWD.encode()), _file("etc/group", GROUP.encode())]
    for applet in sorted(set(applets)):
        if applet != "bin/busybox":
            files.append(_symlink(applet, "/bin/busybox"))
    version = busybox_version()
    created = datetime.datetime.fromtimestamp(os.stat(BUSYBOX).st_mtime, datetime.timezone.utc)
    config = {
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["sh"]},
        "history": [{"created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "created_by": f"labtool: {version} from {BUSYBOX} (busybox-static)"}],
    }
    return store.add_image(ref, [store.layer_tar(files)], config)


def make_hello_world(ref="hello-world:latest"):
    from labtool.images import hello

    return hello.make_hello_world(ref)


MAKERS = {"busybox:latest": make_busybox, "hello-world:latest": make_hello_world}
