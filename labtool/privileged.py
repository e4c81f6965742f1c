"""Step 07: ``--privileged``, the protections of steps 01-06 switched off on request.

The slide "Full privileges mode": *use the --privileged flag; still partially isolated: the
network namespace still works; use --net host to drop network isolation.* And "God mode":
*the process looks like an "uncontainerized" one, but you still get all the tooling from
Docker related to container management.*

``docker run --privileged`` (Docker's ``HostConfig.Privileged``) does not make a container
"less of a container" in every way: its processes still get new PID, UTS, mount, IPC and
network namespaces, a cgroup, an overlay root and a supervisor, so ``ps``, ``logs``,
``stop`` and ``rm`` work as for any other. What it switches off is every *protection* that
keeps root in the container from reaching the host's kernel and hardware. ``PROTECTIONS``
lists them, each with why it normally exists. Add ``--net host --pid host`` and the
namespaces that remain hardly show: the process sees the host's links and processes.

This module is a set of decisions the other steps consult, not a step of its own making
things on the host (``runtime.py`` lists it so that its ``prepare`` narrates, and so that
``--upto`` before it refuses the flag)::

    capabilities.plan(..., privileged=True)   every capability of the host's bounding set
    rootfs.mount_kernel_filesystems           the host's device nodes in /dev (``host_devices``),
                                              /sys mounted read-write
    cgroups.forked                            no device rules: v1 ``devices.allow a``, v2 no program
    capabilities.in_child                     no masked, no read-only /proc and /sys paths

Why it is dangerous: root with every capability and the host's devices *is* root on the
host. It can read and write the host's disks (``mount /dev/vda /mnt``), load kernel modules,
set the host's clock, reboot the machine, write any sysctl of the host's kernel. When it is
used: Docker-in-Docker (a container that makes containers needs to mount, make cgroups and
namespaces), system tools shipped as images (disk utilities, device plugins, monitoring
agents that read the whole machine, ``--net host --pid host`` debug containers), and
hardware access (a GPU, a USB device) when ``--device`` and ``--cap-add`` would do: the
smaller grant is nearly always better.

Man pages: man 7 capabilities, man 4 loop, man 7 cgroups (devices), man 5 proc, man 5 sysfs.
"""

import contextlib
import os
import stat
import subprocess
from dataclasses import dataclass

from labtool import explain
from labtool.errors import UsageError


@dataclass(frozen=True)
class Protection:
    """One protection a normal container has, and what ``--privileged`` does instead."""

    name: str            # as --explain and the notebook's table call it
    step: str            # the step (notebook) that gives it
    normally: str        # what a normal container gets
    why: str             # why it exists: what root in a container could do without it
    privileged: str      # what --privileged gives instead


PROTECTIONS = [
    Protection("capabilities", "06-capabilities", "Docker's 14 capabilities",
               "the other 27 are the host's administration: mount, modules, clock, reboot, raw I/O, ptrace",
               "every capability of the host's bounding set (--cap-drop is ignored, as in Docker)"),
    Protection("devices", "01-chroot", "a tmpfs /dev with null, zero, full, random, urandom, tty",
               "the host's /dev holds its disks, memory and consoles: a node is a door to the hardware",
               "a node for every character and block device of the host's /dev"),
    Protection("device cgroup", "03-cgroups", "deny all devices but those few (and --device)",
               "mknod is cheap (CAP_MKNOD is a default): the cgroup decides which nodes may be opened",
               "allow all: v1 devices.allow 'a', v2 no BPF program"),
    Protection("read-only /sys", "01-chroot", "sysfs mounted read-only",
               "/sys is the host kernel's device model and settings, shared by every container",
               "sysfs read-write"),
    Protection("masked paths", "06-capabilities", "/proc/kcore, /proc/keys, /sys/firmware, ... covered up",
               "they show the host's memory, keys, timers and firmware",
               "nothing covered"),
    Protection("read-only paths", "06-capabilities", "/proc/sys, /proc/sysrq-trigger, /proc/irq, /proc/bus read-only",
               "one write there changes the host kernel's settings or crashes it",
               "all writable"),
    Protection("seccomp, AppArmor", "none in labtool", "Docker: a seccomp filter of ~44 blocked system calls",
               "system calls that namespaces do not cover (keyctl, kexec_load, open_by_handle_at, ...)",
               "Docker runs the container unconfined; labtool has no filter to switch off"),
]
# What it leaves alone: the namespaces (each --pid/--net/--ipc/--uts host is a choice of its
# own), the cgroup limits (--memory, --pids-limit still hold), the overlay root, the
# supervisor, and no-new-privileges: off by default anyway, and honoured when asked for
# (Docker too sets it from --security-opt alone).


def check(spec, step_names):
    """Refuse what Docker refuses, before anything is made (runtime.build)."""
    if not spec.privileged:
        return
    if "privileged" not in step_names:
        raise UsageError(f"--privileged comes with step 07 (privileged): --upto {spec.upto} stops before it")
    if spec.namespaces.user == "private":
        # Docker's daemon with userns-remap: "privileged mode is incompatible with user namespaces.
        # You must run the container in the host namespace when running privileged mode".
        raise UsageError("--privileged cannot go with --userns: root of a user namespace holds its capabilities "
                         "only inside it and may not open the host's devices (Docker: use --userns=host)")


# --- devices: copies of the host's nodes ----------------------------------------------------

# Not copied (as runc's GetDevices skips them): the container has its own pts, shm, mqueue and
# fd; /dev/console is its terminal, not the host's; ptmx is a link to its own pts/ptmx.
SKIPPED_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")
SKIPPED_NAMES = ("console", "ptmx")


@dataclass(frozen=True)
class HostDevice:
    path: str            # /dev/vda, /dev/net/tun
    type: str            # "c" or "b"
    major: int
    minor: int
    mode: int            # permission bits
    uid: int
    gid: int


def host_devices(top="/dev"):
    """Every character and block device node under the host's ``top``, as Docker lists them
    for a privileged container (runc's devices.HostDevices); symbolic links are left out."""
    found = []
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in SKIPPED_DIRS:
                found += host_devices(entry.path)
            continue
        if entry.name in SKIPPED_NAMES and top == "/dev":
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            found.append(HostDevice(entry.path, "c" if stat.S_ISCHR(st.st_mode) else "b",
                                    os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode),
                                    st.st_uid, st.st_gid))
    return found


def copy_host_devices(dev_dir, already):
    """mknod a copy of each host device node in the container's /dev (a tmpfs at ``dev_dir``).

    Why copies, and not a devtmpfs (the kernel's own filesystem that fills the host's /dev):
    devtmpfs has one instance for the whole machine (measured: mounted again in a new mount
    namespace, its ``null`` has the device and inode numbers of the host's /dev/null). Mounted
    in a container it is the host's /dev itself, so ``rm /dev/vda`` or a mknod inside would change the host's /dev for every
    process. Copies are the container's own nodes in its own tmpfs: the same devices, and
    removing one removes it from the container only. The price, the same as Docker's: a
    device that appears later (a USB stick plugged in, a loop device made by
    /dev/loop-control) has no node inside until the container is started again (or makes
    one itself: mknod is allowed, and the device cgroup allows all).

    ``already``: names the container's /dev holds anyway (null, zero, ...). Returns the count.
    """
    made = 0
    for device in host_devices():
        relative = device.path[len("/dev/"):]
        if relative in already:
            continue
        node = os.path.join(dev_dir, relative)
        os.makedirs(os.path.dirname(node), exist_ok=True)
        kind = stat.S_IFCHR if device.type == "c" else stat.S_IFBLK
        os.mknod(node, device.mode | kind, os.makedev(device.major, device.minor))
        os.chown(node, device.uid, device.gid)
        os.chmod(node, device.mode)
        made += 1
    explain.say("privileged", f"mknod {made} nodes: copies of the host's /dev (loop-control, disks, ttys ...)",
                "--privileged: every host device; copies, not the host's one devtmpfs")
    return made


# --- the device cgroup ---------------------------------------------------------------------

def device_rules(c, rules):
    """The device rules of container ``c``: ``rules`` (Docker's defaults plus --device), or
    None for a privileged container: no rules at all, which the backends spell as v1
    ``a`` > devices.allow (a fresh cgroup inherits "a *:* rwm" anyway) and on v2 as no BPF
    program attached (without a program every device may be opened)."""
    if not getattr(c, "privileged", False):
        return rules
    explain.say("privileged", "no device rules: v1 'a' > devices.allow; v2 no BPF program",
                "--privileged: every device may be opened")
    return None


# --- the step, as runtime.py calls it ------------------------------------------------------

def prepare(c):
    """Host side: say, for --explain, which protections this container goes without."""
    if not c.privileged:
        return
    for p in PROTECTIONS:
        explain.say("privileged", f"off: {p.name} ({p.step})", f"normally {p.normally}; now {p.privileged}")
    kept = [k for k in ("pid", "uts", "mnt", "ipc", "net") if k in c.namespaces]
    explain.say("privileged", f"kept: namespaces {', '.join(kept) or 'none'}",
                "--privileged leaves them; --net host, --pid host ... take them away one by one")


# --- probes: what a process inside can see and do (notebook 07, its checks, the tests) ------

def host_disk():
    """The name of the disk that holds the host's root filesystem ("vda", "sda", "nvme0n1"),
    found from / in /proc/self/mountinfo through /sys/dev/block; else the first disk in
    /sys/block that is not a loop, ram or zram device; "" if there is none."""
    with open("/proc/self/mountinfo") as f:
        numbers = [line.split()[2] for line in f if line.split()[4] == "/"]
    for number in numbers[-1:]:
        path = os.path.realpath(f"/sys/dev/block/{number}")
        if os.path.exists(os.path.join(path, "partition")):
            path = os.path.dirname(path)          # a partition (vda1): its disk (vda)
        if os.path.isdir(path) and "/block/" in path:
            return os.path.basename(path)
    disks = sorted(d for d in os.listdir("/sys/block") if not d.startswith(("loop", "ram", "zram")))
    return disks[0] if disks else ""


@dataclass(frozen=True)
class Probe:
    key: str             # a short name: the check functions and the tests use it
    row: str             # the row of the notebook's table
    command: str         # busybox sh; prints the answer; changes nothing outside the container
    step: str            # the step whose protection it shows


def _yes_no(command):
    return f"if ( {command} ) >/dev/null 2>&1; then echo yes; else echo no; fi"


# Every command below only looks, or acts inside the container's own namespaces: a node is
# made in the container's /tmp, a file opened for appending is never written to (an empty
# append changes nothing, even in /sys and /proc/sys), the tmpfs is mounted in its own
# mount namespace. ``$DISK`` and ``$HOST_NET`` come from the host (see ``probe``).
PROBES = [
    Probe("caps", "capabilities (CapEff)", "sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status", "06"),
    Probe("loop_control", "/dev/loop-control there", _yes_no("[ -c /dev/loop-control ]"), "01"),
    Probe("disk_node", "the host's root disk's node there", _yes_no('[ -b "/dev/$DISK" ]'), "01"),
    Probe("open_device", "open a device node it made (mknod c 10 237)",
          _yes_no("mknod /tmp/lc c 10 237 && : < /tmp/lc"), "03"),
    Probe("sys_writable", "/sys writable", _yes_no(": >> /sys/class/net/lo/mtu"), "01"),
    Probe("masked", "/proc/keys, /proc/kcore, /proc/timer_list ...",
          "if grep -qE ' /proc/(keys|kcore|timer_list) ' /proc/self/mountinfo; then echo masked; "
          "else echo visible; fi", "06"),
    Probe("proc_sys_writable", "/proc/sys writable", _yes_no(": >> /proc/sys/kernel/domainname"), "06"),
    Probe("mount", "can mount (a tmpfs)", _yes_no("mkdir -p /tmp/m && mount -t tmpfs lab /tmp/m"), "06"),
    Probe("host_processes", "sees the host's processes", _yes_no('[ "$(cat /proc/1/comm)" != sh ]'), "02"),
    Probe("host_links", "sees the host's network links",
          # a link besides lo and the container's own veth end (eth0@ifN: its peer is on the host)
          _yes_no("ip -o link | grep -v -e ': lo:' -e '@if' | grep -q ."), "05"),
    Probe("netns", "network namespace",
          'if [ "$(readlink /proc/self/ns/net)" = "$HOST_NET" ]; then echo "host\'s"; else echo own; fi', "02"),
]

# The notebook's four columns
MODES = [
    ("default", []),
    ("--cap-add SYS_ADMIN", ["--cap-add", "SYS_ADMIN"]),
    ("--privileged", ["--privileged"]),
    ("--privileged --net host --pid host", ["--privileged", "--net", "host", "--pid", "host"]),
]


def probe_script(probes=PROBES):
    """One shell script that answers every probe, a line "KEY ANSWER" each."""
    lines = ["cd /tmp || exit 3"]
    for p in probes:
        lines.append(f"echo \"{p.key} $({p.command})\"")
    return "\n".join(lines)


def probe(*flags, probes=PROBES):
    """Run every probe in one container made with ``labtool run FLAGS``; return
    {key: answer}. Raises RuntimeError with labtool's message if it could not run."""
    from labtool import notebook

    env = ["-e", f"DISK={host_disk()}", "-e", f"HOST_NET={os.readlink('/proc/self/ns/net')}"]
    r = notebook.labtool("run", "--rm", *env, *flags, "busybox", "sh", "-c", probe_script(probes), quiet=True)
    if r.code != 0:
        raise RuntimeError((r.err.strip().splitlines() or [f"exit code {r.code}"])[-1])
    return dict(line.partition(" ")[::2] for line in r.out.splitlines())


def table(modes=MODES, probes=PROBES):
    """{mode name: {key: answer}} for every mode: the notebook's table, from live probes."""
    return {name: probe(*flags, probes=probes) for name, flags in modes}


# --- a disk to break, for the "God mode" demonstration ---------------------------------------

@contextlib.contextmanager
def scratch_disk(path, size_mib=8):
    """A block device made from a scratch file: ``with scratch_disk(PATH) as dev: ...``.

    The file (``size_mib`` MiB of zeros, sparse) is attached to a free loop device (man 4
    loop, man 8 losetup: the kernel then serves the file as /dev/loopN, a disk like any
    other). On the way out, *whatever happened inside*, the loop device is detached and the
    file removed. A loop device is one of the host's devices: a privileged container
    started while it is attached has its node, as it would have /dev/vda.
    """
    with open(path, "xb") as f:                 # "x": never overwrite a file someone has
        f.truncate(size_mib << 20)
    device = ""
    try:
        r = subprocess.run(["losetup", "--find", "--show", path], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"losetup could not attach {path}: {r.stderr.strip()}")
        device = r.stdout.strip()
        yield device
    finally:
        if device:
            # still mounted somewhere (a container that died half-way)? losetup -d then only
            # marks it "autoclear": the kernel detaches it when the last user lets go
            subprocess.run(["losetup", "--detach", device], capture_output=True, timeout=30)
        os.unlink(path)


def attached(path):
    """The loop devices that serve ``path`` now, even if the file is already deleted:
    from /sys/block/loopN/loop/backing_file, which ``losetup -a`` reads too."""
    found = []
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if backing == os.path.abspath(path):
            found.append(f"/dev/{name}")
    return found
