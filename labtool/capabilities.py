"""Step 06: capabilities, root's power split into pieces (man 7 capabilities).

The slide "Feature Authorizations": *when a process makes system calls, the capabilities of
that process are checked for the required capability.* Since Linux 2.2 the kernel does not
ask "is this uid 0?" but "does this process hold CAP_X?": changing the clock needs
CAP_SYS_TIME, mounting needs CAP_SYS_ADMIN, a raw socket needs CAP_NET_RAW, and so on, 41
capabilities on a 6.x kernel (``/proc/sys/kernel/cap_last_cap`` is the last number).
Root normally holds them all. A container's root does not need most of them, so Docker
keeps 14 and drops the rest: that is ``docker run``'s default, ``--cap-add`` and
``--cap-drop`` change it.

Each process has five sets of capabilities, 64-bit masks with bit N for capability N
(``grep Cap /proc/self/status`` shows them in hex):

    CapEff  effective     what the kernel checks at each system call
    CapPrm  permitted     what the process may make effective (capset(2)); it can only shrink
    CapInh  inheritable   what may pass through execve to a program with matching file capabilities
    CapBnd  bounding      the ceiling: nothing outside it is ever gained again, by any execve
    CapAmb  ambient       what passes through execve to *any* program of a non-root user (Linux 4.3)

What execve(2) does with them (man 7 capabilities, "Transformation of capabilities during
execve()"), for a program without file capabilities:

    root (uid 0):  permitted = effective = inheritable | bounding
    anybody else:  permitted = effective = ambient

So for root the bounding set is what counts: a container's root gets exactly its bounding set
at every execve. A non-root user gets nothing unless the ambient set holds something; Docker
never fills it, so ``--user 1000`` runs with no effective capabilities at all, even with
``--cap-add``. (A set-user-ID-root program, or a file capability such as Debian's
``ping: cap_net_raw=ep``, can still give a non-root process capabilities, but never beyond the
bounding set; ``--security-opt no-new-privileges`` switches that door off too.)

The system calls (man 2 prctl, man 2 capset):

    prctl(PR_CAPBSET_DROP, CAP)               remove CAP from the bounding set, for good
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)   empty the ambient set
    capset(effective, permitted, inheritable) set the other three (permitted only shrinks)
    prctl(PR_SET_NO_NEW_PRIVS, 1)             execve never raises privileges again (inherited)

When: last, just before execve. Everything before it (mount /proc, pivot_root, sethostname,
the masked paths below) needs CAP_SYS_ADMIN, which the container must not keep. runc does the
same in ``finalizeNamespace``: bounding set first, then the user switch (which needs
CAP_SETUID and CAP_SETGID: still effective), then capset (``drop_privileges``).

Capabilities alone are not the whole story: root in a container still owns the kernel's
``/proc`` and ``/sys`` files that capabilities do not guard (``/proc/kcore`` is readable by
root, ``/proc/sysrq-trigger`` writable). So Docker also *masks* some paths (something empty
mounted over them) and makes others *read-only*: ``MASKED`` and ``READ_ONLY`` below.
"""

import errno
import functools
import os
from dataclasses import dataclass, field

from labtool import explain, syscalls, users
from labtool.errors import UsageError


@dataclass(frozen=True)
class Capability:
    number: int          # the bit in the masks, and the argument of prctl
    name: str            # without "CAP_", as docker's flags take it
    allows: str          # what it lets a process do (man 7 capabilities, shortened)
    docker: str          # why Docker keeps it (the default set), or why it drops it


# Every capability of a 6.x kernel, in the kernel's order (include/uapi/linux/capability.h).
CAPABILITIES = [
    Capability(0, "CHOWN", "change the owner and group of any file (chown(2))",
               "kept: installers chown files to the service users of the image"),
    Capability(1, "DAC_OVERRIDE", "read, write and execute files whatever their permission bits say",
               "kept: root of an image expects to use all of the image's files"),
    Capability(2, "DAC_READ_SEARCH", "read any file and directory; open_by_handle_at(2)",
               "dropped: with open_by_handle_at the 2014 'shocker' exploit read the host's files"),
    Capability(3, "FOWNER", "do what only a file's owner may do (chmod, utime) to any file",
               "kept: chmod and touch on any file of the image, as installers do"),
    Capability(4, "FSETID", "keep the set-user-ID and set-group-ID bits of a file when it changes",
               "kept: installing set-user-ID programs must not strip their bits"),
    Capability(5, "KILL", "send signals to processes of other users",
               "kept: a root init must stop its services; it sees only its own PID namespace"),
    Capability(6, "SETGID", "change group ids (setgid, setgroups)",
               "kept: servers start as root and switch to a service user's group"),
    Capability(7, "SETUID", "change user ids (setuid)",
               "kept: servers start as root and switch to a service user (su, gosu)"),
    Capability(8, "SETPCAP", "drop from the bounding set; add to the inheritable set",
               "kept: lets a program drop capabilities further; it can never gain one"),
    Capability(9, "LINUX_IMMUTABLE", "set the immutable and append-only flags (chattr +i)",
               "dropped: files nobody, not even root, can change are the host admin's tool"),
    Capability(10, "NET_BIND_SERVICE", "bind to ports below 1024",
               "kept: a web server on port 80 of the container's own network namespace"),
    Capability(11, "NET_BROADCAST", "broadcast and listen to multicast (unused by the kernel)",
               "dropped: nothing needs it"),
    Capability(12, "NET_ADMIN", "configure interfaces, addresses, routes and the firewall",
               "dropped: the runtime sets the container's network up; the container uses it"),
    Capability(13, "NET_RAW", "raw and packet sockets (ping, traceroute, sniffing, spoofing)",
               "kept for ping; the most criticised default: ARP and DNS spoofing on a shared bridge"),
    Capability(14, "IPC_LOCK", "lock memory (mlock) beyond RLIMIT_MEMLOCK",
               "dropped: locked memory cannot be swapped out, the host's problem"),
    Capability(15, "IPC_OWNER", "bypass permission checks on System V IPC objects",
               "dropped: the IPC namespace already separates containers; no need to bypass"),
    Capability(16, "SYS_MODULE", "load and unload kernel modules",
               "dropped: a module is code in the one kernel every container shares"),
    Capability(17, "SYS_RAWIO", "raw I/O: iopl, ioperm, /dev/mem, /dev/port",
               "dropped: raw access to the host's hardware and memory"),
    Capability(18, "SYS_CHROOT", "chroot(2)",
               "kept: build tools and daemons (sshd, postfix) chroot; pivot_root made it harmless"),
    Capability(19, "SYS_PTRACE", "trace and read the memory of any process (ptrace, process_vm_readv)",
               "dropped: together with --pid host it is a way onto the host's processes"),
    Capability(20, "SYS_PACCT", "switch process accounting on and off (acct(2))",
               "dropped: accounting is the host's"),
    Capability(21, "SYS_ADMIN", "mount, umount, sethostname, swapon, quotas, ... a catch-all",
               "dropped: 'the new root'; with it :ro mounts and masked paths mean little"),
    Capability(22, "SYS_BOOT", "reboot(2) and kexec_load(2)",
               "dropped: one kernel: rebooting it reboots the host"),
    Capability(23, "SYS_NICE", "raise priority (nice below 0), real-time scheduling, CPU affinity of others",
               "dropped: a real-time process can starve the host's"),
    Capability(24, "SYS_RESOURCE", "exceed resource limits (rlimits, quotas, reserved disk space)",
               "dropped: limits are for the container to stay within"),
    Capability(25, "SYS_TIME", "set the system clock (settimeofday, adjtimex, clock_settime)",
               "dropped: there is one clock, the host's; no namespace separates it"),
    Capability(26, "SYS_TTY_CONFIG", "vhangup(2) and privileged ioctls on virtual consoles",
               "dropped: the consoles are the host's"),
    Capability(27, "MKNOD", "create device files (mknod(2))",
               "kept: images make device nodes; the device cgroup (step 03) decides which may be opened"),
    Capability(28, "LEASE", "take leases on files it does not own (fcntl F_SETLEASE)",
               "dropped: rarely needed"),
    Capability(29, "AUDIT_WRITE", "write records to the kernel's audit log",
               "kept: login programs (sshd, su, PAM) refuse to work if they cannot log"),
    Capability(30, "AUDIT_CONTROL", "change the kernel's audit rules",
               "dropped: the audit log is the host's"),
    Capability(31, "SETFCAP", "set file capabilities (setcap)",
               "kept: packages whose programs carry file capabilities install; the bounding set still caps them"),
    Capability(32, "MAC_OVERRIDE", "override mandatory access control (Smack)",
               "dropped: the host's security policy"),
    Capability(33, "MAC_ADMIN", "change mandatory access control policy (AppArmor, Smack)",
               "dropped: the host's security policy"),
    Capability(34, "SYSLOG", "read the kernel log (dmesg), see kernel addresses",
               "dropped: the kernel log is the host's and shows its addresses"),
    Capability(35, "WAKE_ALARM", "set timers that wake the system from suspend",
               "dropped: power management is the host's"),
    Capability(36, "BLOCK_SUSPEND", "keep the system from suspending",
               "dropped: power management is the host's"),
    Capability(37, "AUDIT_READ", "read the audit log through a multicast netlink socket",
               "dropped: the audit log is the host's"),
    Capability(38, "PERFMON", "performance monitoring (perf_event_open)",
               "dropped: it watches the whole machine and can leak the host's secrets"),
    Capability(39, "BPF", "load BPF programs and create maps",
               "dropped: programs that run in the host's kernel"),
    Capability(40, "CHECKPOINT_RESTORE", "choose PIDs for new processes, checkpoint and restore",
               "dropped: rarely needed"),
]
BY_NAME = {cap.name: cap for cap in CAPABILITIES}

# Docker's default set (moby's oci.DefaultCapabilities): CapEff 00000000a80425fb
DOCKER_DEFAULT = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                  "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]

# In --explain, the dropped capabilities worth naming first
NOTABLE = ["SYS_ADMIN", "NET_ADMIN", "SYS_MODULE", "SYS_TIME", "SYS_PTRACE", "SYS_NICE"]


# --- names and masks ---------------------------------------------------------------------

@functools.cache                  # the kernel does not change under us: read it once
def last_cap():
    """The highest capability number this kernel knows (40 on Linux 5.9 and later)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return CAPABILITIES[-1].number


def all_capabilities():
    """The mask of every capability this kernel knows."""
    return (1 << (last_cap() + 1)) - 1


def name_of(number):
    """CAP_SYS_ADMIN for 21; CAP_41 for a number newer than this table."""
    return "CAP_" + (CAPABILITIES[number].name if number < len(CAPABILITIES) else str(number))


def names_of(mask):
    """The names in a mask, lowest bit first: 0x3 -> ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]."""
    return [name_of(n) for n in range(mask.bit_length()) if mask >> n & 1]


def mask_of(names):
    """The mask of some names (with or without CAP_)."""
    mask = 0
    for name in names:
        mask |= 1 << BY_NAME[name.upper().removeprefix("CAP_")].number
    return mask


def parse_name(text, flag="--cap-add"):
    """A name as docker's flags take it: NET_ADMIN, net_admin, CAP_NET_ADMIN, or ALL."""
    name = text.strip().upper().removeprefix("CAP_")
    if name == "ALL" or name in BY_NAME:
        return name
    raise UsageError(f"unknown capability '{text}' for {flag}: use a name of man 7 capabilities "
                     "such as NET_ADMIN or CAP_NET_ADMIN, or ALL")


def read_sets(pid="self"):
    """The five capability sets of a process, from /proc/PID/status: {"CapEff": 0xa80425fb, ...}."""
    with open(f"/proc/{pid}/status") as f:
        return {key: int(value, 16) for key, _, value in (line.partition(":") for line in f)
                if key.startswith("Cap")}


def host_bounding():
    """This machine's bounding set: what labtool itself could ever hand on (FACTS: this host
    lacks CAP_SYS_RESOURCE, so no container here can have it)."""
    return read_sets()["CapBnd"]


# --- the container's set: Docker's rules ----------------------------------------------------

@dataclass
class Plan:
    """What a container's processes end up with (OCI: ``process.capabilities``,
    ``process.noNewPrivileges``)."""

    caps: int                            # bounding set; also permitted and effective for root
    no_new_privileges: bool = False
    left_out: list = field(default_factory=list)   # wanted (ALL, or the default), but this host lacks them

    # -- in the child, the last moments before execve (see ``drop_privileges``) --

    def limit_bounding(self):
        """prctl(PR_CAPBSET_DROP) for each capability outside the container's set.

        Needs CAP_SETPCAP, which root still has here. Dropping from the bounding set leaves
        the permitted and effective sets alone: the user switch that follows still works.
        """
        outside = [n for n in range(last_cap() + 1) if not self.caps >> n & 1]
        if outside and explain.enabled:
            shown = [name_of(n) for n in sorted(outside, key=_notable_first)]
            more = f"|... {len(outside)} in all" if len(outside) > 4 else ""
            explain.say("capabilities", f"prctl(PR_CAPBSET_DROP, {'|'.join(shown[:4])}{more})",
                        "out of the bounding set: gone for good")
        for n in outside:            # (dropping one that is not there is no error: nothing to check first)
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, n)
        if self.left_out:
            explain.say("capabilities", f"{', '.join(self.left_out)} left out",
                        "this host's own bounding set lacks it")

    def apply(self):
        """Empty the ambient set; capset the rest; no-new-privileges if asked.

        Root keeps the container's set as effective and permitted (what its execve would
        give it anyway); any other user keeps nothing, as in Docker.
        """
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
        if os.geteuid() == 0:
            caps = self.caps
            why = f"root keeps {bin(caps).count('1')} capabilities; the rest of root's power is gone"
        else:
            caps = 0
            why = f"uid {os.geteuid()}: no capabilities, as Docker gives a user other than root"
        explain.say("capabilities", f"capset(effective=permitted={caps:#x}, inheritable=0); ambient cleared", why)
        syscalls.capset(caps, caps, 0)
        if self.no_new_privileges:
            explain.say("capabilities", "prctl(PR_SET_NO_NEW_PRIVS, 1)",
                        "set-user-ID bits and file capabilities raise nothing any more")
            syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)


def _notable_first(number):
    name = CAPABILITIES[number].name if number < len(CAPABILITIES) else ""
    return (NOTABLE.index(name) if name in NOTABLE else len(NOTABLE), number)


def plan(spec_caps, available=None, privileged=False):
    """The Plan for a spec's ``capabilities`` (spec.Capabilities), the way Docker decides
    (moby's ``caps.TweakCapabilities``):

    - ``--privileged`` (step 07): every capability; --cap-add and --cap-drop do not matter;
    - neither flag: Docker's default set;
    - ``--cap-add ALL``: every capability except those in ``--cap-drop``;
    - ``--cap-drop ALL``: only those in ``--cap-add``;
    - otherwise: the default set minus ``--cap-drop``, plus ``--cap-add`` (an add wins).

    ``available`` (default: this host's bounding set) is all a container can have. A
    capability asked for by name that is not there is an error; ALL quietly leaves it out.
    """
    available = host_bounding() if available is None else available
    adds = [parse_name(n, "--cap-add") for n in spec_caps.add]
    drops = [parse_name(n, "--cap-drop") for n in spec_caps.drop]
    missing = [n for n in adds if n != "ALL" and not available & mask_of([n])]
    if missing:
        raise UsageError(f"cannot add CAP_{missing[0]}: this host's own bounding set lacks it, "
                         "so no container here can have it (grep CapBnd /proc/self/status)")
    named_adds = mask_of(n for n in adds if n != "ALL")
    named_drops = mask_of(n for n in drops if n != "ALL")
    if privileged:
        wanted = all_capabilities()
    elif "ALL" in adds:
        wanted = all_capabilities() & ~named_drops
    elif "ALL" in drops:
        wanted = named_adds
    else:
        wanted = (mask_of(DOCKER_DEFAULT) & ~named_drops) | named_adds
    return Plan(caps=wanted & available, no_new_privileges=spec_caps.no_new_privileges,
                left_out=names_of(wanted & ~available))


def parse_security_opt(values):
    """``--security-opt``: labtool knows no-new-privileges (also :true, =true, :false)."""
    no_new_privileges = False
    for value in values:
        key, _, setting = value.replace("=", ":", 1).partition(":")
        if key != "no-new-privileges" or setting not in ("", "true", "false"):
            raise UsageError(f"invalid --security-opt '{value}': labtool knows only no-new-privileges "
                             "(or no-new-privileges:true / :false)")
        no_new_privileges = setting != "false"
    return no_new_privileges


def drop_privileges(privileges, user, cwd=None):
    """In the child, the last moments before execve (runc's finalizeNamespace): the bounding
    set, then the user (setresuid needs CAP_SETUID, still effective), then the working
    directory, then capset.

    ``privileges`` is a Plan, or None when the capabilities step is off (``--upto``): then
    root keeps every capability, as in the runtimes of the earlier notebooks.
    """
    if privileges:
        privileges.limit_bounding()
    if user:
        users.become(user)       # without PR_SET_KEEPCAPS the kernel clears a non-root user's sets
    if cwd:
        os.chdir(cwd)
    if privileges:
        privileges.apply()


# --- masked and read-only paths (Docker's MaskedPaths and ReadonlyPaths) ------------------

# Covered up: an empty file (/dev/null) over a file, an empty read-only tmpfs over a directory
MASKED = [
    ("/proc/asound", "the host's sound cards"),
    ("/proc/acpi", "the host's ACPI firmware state and events"),
    ("/proc/kcore", "the host's physical memory, as an ELF core file"),
    ("/proc/keys", "the kernel keyrings of every user on the host, by id"),
    ("/proc/latency_stats", "where the host's processes waited in the kernel"),
    ("/proc/timer_list", "the host's pending timers, with the pids and kernel functions behind them"),
    ("/proc/timer_stats", "who sets timers, host-wide (older kernels)"),
    ("/proc/sched_debug", "the scheduler's view of every process on the host"),
    ("/proc/scsi", "the host's SCSI devices; writing here adds and removes them"),
    ("/sys/firmware", "the firmware's tables: ACPI, DMI, EFI variables"),
    ("/sys/devices/virtual/powercap", "energy counters whose readings leak secrets (PLATYPUS, CVE-2020-8694)"),
]

# Readable, not writable: bound onto themselves, then remounted read-only
READ_ONLY = [
    ("/proc/bus", "PCI and USB devices of the host"),
    ("/proc/fs", "filesystem settings of the host (nfsd, ...)"),
    ("/proc/irq", "which CPU serves which interrupt, host-wide"),
    ("/proc/sys", "sysctl: most settings here are the host kernel's own"),
    ("/proc/sysrq-trigger", "one letter written here reboots or crashes the host"),
]


def mask_paths(paths=MASKED):
    """Cover each path that exists: /dev/null bound over a file, a read-only tmpfs over a
    directory (runc's maskPath). Returns the paths covered."""
    files, directories = [], []
    for path, _why in paths:
        try:
            if os.path.isdir(path):
                syscalls.mount("tmpfs", path, "tmpfs", syscalls.MS_RDONLY, None)
                directories.append(path)
            elif os.path.exists(path):
                syscalls.mount("/dev/null", path, None, syscalls.MS_BIND)
                files.append(path)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise
    if files:
        explain.say("capabilities", f"mount --bind /dev/null over {' '.join(files)}",
                    "masked: the host's secrets read as empty")
    if directories:
        explain.say("capabilities", f"mount -t tmpfs -o ro tmpfs over {' '.join(directories)}",
                    "masked: empty, read-only directories")
    return files + directories


def make_paths_read_only(paths=READ_ONLY):
    """Bind each path that exists onto itself, then remount that bind read-only (runc's
    readonlyPath). Returns the paths made read-only."""
    from labtool.mounts import make_read_only

    done = []
    for path, _why in paths:
        if not os.path.exists(path):
            continue
        syscalls.mount(path, path, None, syscalls.MS_BIND | syscalls.MS_REC)
        with explain.quiet():
            make_read_only(path)
        done.append(path)
    if done:
        explain.say("capabilities", f"mount --bind X X; mount -o remount,bind,ro X: {' '.join(done)}",
                    "read-only: the kernel's settings may be read, not changed")
    return done


# --- the step, as runtime.py calls it ------------------------------------------------------

def in_child(c):
    """In the child, after pivot_root, while it still holds CAP_SYS_ADMIN: masked and
    read-only paths (none for --privileged, step 07). The capabilities themselves go last,
    just before execve: the runtime calls ``drop_privileges`` (and so does --init's PID 1,
    and every ``labtool exec``)."""
    if c.privileged:
        explain.say("privileged", "no masked and no read-only paths",
                    "--privileged: /proc and /sys as the host has them")
        return
    mask_paths()
    make_paths_read_only()


# --- probes: one small command per capability (notebook 06, its checks, the tests) ----------

@dataclass(frozen=True)
class Probe:
    capability: str      # what it needs, beyond plain root: without it the kernel says EPERM
    what: str            # in words, for a table
    command: str         # busybox sh, in /tmp of a fresh container; it changes nothing but the container


PROBES = [
    Probe("CHOWN", "give a file away (to user 2000)", "touch f && chown 2000 f"),
    Probe("DAC_OVERRIDE", "read a file of mode 000", "touch g && chmod 000 g && cat g"),
    Probe("SETUID", "become user nobody (su)", "su -s /bin/sh nobody -c true"),
    Probe("MKNOD", "make a device node", "mknod null c 1 3"),
    Probe("NET_RAW", "ping 127.0.0.1 (a raw socket)", "ping -c 1 -W 1 127.0.0.1"),
    Probe("SYS_CHROOT", "chroot", "chroot / true"),
    Probe("NET_ADMIN", "add a network interface", "ip link add lab0 type bridge"),
    Probe("SYS_ADMIN", "mount a filesystem", "mkdir m && mount -t tmpfs lab m"),
    Probe("SYS_NICE", "raise its own priority (renice -n -5)", "renice -n -5 $$"),
    Probe("SYS_RESOURCE", "raise its hard limit of open files", "ulimit -H -n $(( $(ulimit -H -n) + 1 ))"),
    # Setting the clock sets the *host's* clock: a container has no clock of its own. So this
    # probe runs only where it must fail: never when SYS_TIME is in the container's bounding
    # set (checked inside, from /proc/self/status), and it would set the time it reads anyway.
    # (busybox's date exits 0 even when it "can't set date": its error message is the answer.)
    Probe("SYS_TIME", "set the clock (date -s)",
          "[ -z \"$(date -s \"$(date '+%Y-%m-%d %H:%M:%S')\" 2>&1 >/dev/null)\" ]"),
]
NOT_RUN = "not run"     # a SYS_TIME probe where it would have worked


def probe_script(probes=PROBES):
    """One shell script that tries each probe and prints "NAME yes|no|not run" per line."""
    lines = ["cd /tmp || exit 3",
             "bounding=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"]
    for p in probes:
        attempt = f"if ( {p.command} ) >/dev/null 2>&1; then echo '{p.capability} yes'; " \
                  f"else echo '{p.capability} no'; fi"
        if p.capability == "SYS_TIME":
            attempt = (f"if [ $(( 0x$bounding >> {BY_NAME['SYS_TIME'].number} & 1 )) = 1 ]; "
                       f"then echo 'SYS_TIME {NOT_RUN}'; else {attempt}; fi")
        lines.append(attempt)
    return "\n".join(lines)


def probe(*flags, probes=PROBES):
    """Run every probe in one container made with ``labtool run FLAGS``; return
    {capability: True (it worked), False (refused) or NOT_RUN}. Raises RuntimeError with
    labtool's message if the container could not run."""
    from labtool import notebook

    r = notebook.labtool("run", "--rm", *flags, "busybox", "sh", "-c", probe_script(probes), quiet=True)
    if r.code != 0:
        raise RuntimeError((r.err.strip().splitlines() or [f"exit code {r.code}"])[-1])
    found = {}
    for line in r.out.splitlines():
        name, _, result = line.partition(" ")
        found[name] = {"yes": True, "no": False}.get(result, result)
    return found
