"""Step 01: a root filesystem of its own (man 2 chroot, man 2 pivot_root).

A container's files are a directory on the host: the image's layers, copied (this
step) or stacked with overlayfs (step 04). The process must see that directory as ``/``.

chroot(2) (Unix V7, 1979) changes what "/" means for one process, and nothing else. It
is not a security boundary: a root process inside can chroot again into a subdirectory,
keep its working directory outside that new root, walk up with "..", and be on the host
(``escape`` below shows it). Processes, network and hostname are the host's as well.

pivot_root(2) instead changes the root *mount* of a mount namespace: the old root is
moved away and then detached, so there is nothing left to walk up to. Docker (runc)
uses pivot_root; it needs a new mount namespace (step 02) so the host keeps its root.
"""

import os
import shutil
import stat

from labtool import explain, mounts, privileged, syscalls


def copy_layers(layers, target):
    """The "vfs" storage driver: a full private copy of the image's layers, lowest first.

    Simple and slow: every container costs the whole image in disk and time. Step 04
    replaces this with overlayfs, where containers share the image's layers.
    """
    os.makedirs(target, exist_ok=True)
    for layer in layers:
        apply_layer(layer, target)
        shutil.copystat(layer, target)


def apply_layer(layer, target):
    """Copy one layer over ``target``: its files win, and its deletions delete.

    A layer says "deleted" the way overlayfs does (step 04): a whiteout (a character device
    0:0) removes that name, an opaque directory replaces the whole directory below it.
    """
    from labtool.overlay import is_opaque, is_whiteout

    for entry in os.scandir(layer):
        dest = os.path.join(target, entry.name)
        if is_whiteout(entry.path):
            _remove(dest)
        elif entry.is_dir(follow_symlinks=False):
            if is_opaque(entry.path) or not (os.path.isdir(dest) and not os.path.islink(dest)):
                _remove(dest)
                os.mkdir(dest)
            apply_layer(entry.path, dest)
            shutil.copystat(entry.path, dest, follow_symlinks=False)
            _copy_owner(entry.path, dest)
        else:
            _remove(dest)
            copy_entry(entry.path, dest)


def copy_entry(source, dest):
    """Copy one file, symlink, device or fifo, keeping its mode, owner and times."""
    st = os.lstat(source)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        os.mknod(dest, st.st_mode, st.st_rdev)
    elif not stat.S_ISSOCK(st.st_mode):          # a socket is a live thing: nothing to copy
        shutil.copy2(source, dest, follow_symlinks=False)
    if os.path.lexists(dest):
        _copy_owner(source, dest)


def _copy_owner(source, dest):
    st = os.lstat(source)
    os.lchown(dest, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))   # again: chown clears set-user-ID bits


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def chroot(new_root):
    explain.say("chroot", "chroot(<rootfs>)", "the process now sees this directory as /")
    os.chroot(new_root)
    os.chdir("/")


def escape():
    """Try to break out of a chroot, as a root process inside it would.

    1. mkdir a directory and chroot into it, but do NOT chdir: our working directory
       is now outside our root, where the kernel's ".." check never stops us;
    2. chdir("..") many times: from outside the root, ".." climbs up to the real "/";
    3. chroot(".") there: the host's root is ours again.

    After a pivot_root in a new mount namespace the same moves stay inside: the
    container's root is the top of that mount tree, so ".." stops there.
    """
    os.makedirs("/.escape", exist_ok=True)
    os.chroot("/.escape")
    for _ in range(64):
        os.chdir("..")
    os.chroot(".")
    os.chdir("/")


def make_mounts_private():
    """Stop mount propagation between this new mount namespace and the host.

    On systemd hosts "/" is a shared mount: without this, every mount we make next would
    appear on the host too, and pivot_root would refuse with EINVAL.
    """
    syscalls.require_new_namespace("mnt", "making / private")
    explain.say("chroot", 'mount("/", MS_REC|MS_PRIVATE)', "our mounts must not propagate to the host")
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)


def pivot_root(new_root):
    """Make ``new_root`` the root of the current (new, private) mount namespace, for good.

    1. bind ``new_root`` onto itself: pivot_root needs a mount point (else EBUSY);
    2. pivot_root(".", "."): the new root goes in, the old root lands on top of it;
    3. umount2(".", MNT_DETACH): detach the old root; the host's files are gone from view.
    """
    explain.say("chroot", "mount --bind <rootfs> <rootfs>", "pivot_root needs the new root to be a mount point")
    syscalls.mount(new_root, new_root, None, syscalls.MS_BIND | syscalls.MS_REC)
    os.chdir(new_root)
    explain.say("chroot", 'pivot_root(".", ".")', "the rootfs becomes / of this mount namespace")
    syscalls.pivot_root(".", ".")
    explain.say("chroot", 'umount2(".", MNT_DETACH)', "detach the old root: no way back to the host's files")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")


# The small /dev a container gets: a tmpfs with these character devices (man 4 null,
# man 4 random, man 4 tty), not the host's /dev with its disks. (name, major, minor)
DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0)]
DEV_LINKS = [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")]
NOSUID_NODEV_NOEXEC = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC


def _mount(source, target, fstype, flags, data, why):
    explain.say("chroot", f"mount {fstype or source} on <rootfs>{target.split('/rootfs', 1)[-1]}", why)
    os.makedirs(target, exist_ok=True)
    syscalls.mount(source, target, fstype, flags, data)


def mount_kernel_filesystems(c):
    """Mount /proc, /sys, /dev and friends into the rootfs, from inside the new namespaces.

    /proc is mounted by the child itself, so it shows the child's PID namespace;
    /sys is read-only so the container cannot reconfigure the host's devices through it
    (read-write with --privileged, step 07, which also puts the host's devices in /dev).
    """
    root = c.rootfs
    full_privileges = getattr(c, "privileged", False)
    _mount("proc", f"{root}/proc", "proc", NOSUID_NODEV_NOEXEC, None,
           "processes of this PID namespace only")
    if full_privileges:
        _mount("sysfs", f"{root}/sys", "sysfs", NOSUID_NODEV_NOEXEC, None,
               "--privileged: read-write, the host kernel's settings writable")
    else:
        _mount("sysfs", f"{root}/sys", "sysfs", NOSUID_NODEV_NOEXEC | syscalls.MS_RDONLY, None,
               "read-only: no writing to the host's kernel settings")
    _mount("tmpfs", f"{root}/dev", "tmpfs", syscalls.MS_NOSUID | syscalls.MS_STRICTATIME, "mode=755,size=65536k",
           "an empty /dev of its own, not the host's disks")
    for name, major, minor in DEVICES:
        node = f"{root}/dev/{name}"
        if "user" in c.namespaces:
            # mknod is never allowed in a user namespace: bind the host's node instead
            explain.say("chroot", f"mount --bind /dev/{name} <rootfs>/dev/{name}", "no mknod in a user namespace")
            open(node, "w").close()
            syscalls.mount(f"/dev/{name}", node, None, syscalls.MS_BIND)
        else:
            explain.say("chroot", f"mknod /dev/{name} c {major} {minor}")
            os.mknod(node, 0o666 | 0o020000, os.makedev(major, minor))
            os.chmod(node, 0o666)
    for device in getattr(c, "devices", []):     # --device (step 03 lets the cgroup allow it)
        node = root + device.container_path
        os.makedirs(os.path.dirname(node), exist_ok=True)
        if "user" in c.namespaces:
            explain.say("chroot", f"mount --bind {device.host_path} <rootfs>{device.container_path}", "--device")
            open(node, "w").close()
            syscalls.mount(device.host_path, node, None, syscalls.MS_BIND)
        else:
            explain.say("chroot", f"mknod {device.container_path} {device.type} {device.major} {device.minor}",
                        "--device: the host's device under this name")
            kind = 0o020000 if device.type == "c" else 0o060000
            os.mknod(node, device.mode | kind, os.makedev(device.major, device.minor))
            os.chmod(node, device.mode)
    if full_privileges:
        privileged.copy_host_devices(f"{root}/dev", {name for name, *_ in DEVICES + DEV_LINKS}
                                 | {d.container_path[len("/dev/"):] for d in getattr(c, "devices", [])})
    for name, target in DEV_LINKS:
        os.symlink(target, f"{root}/dev/{name}")
    _mount("devpts", f"{root}/dev/pts", "devpts", syscalls.MS_NOSUID | syscalls.MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620,gid=5", "its own pseudo-terminals")
    _mount("shm", f"{root}/dev/shm", "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k",
           "POSIX shared memory, private to the container")
    if "ipc" in c.namespaces:
        _mount("mqueue", f"{root}/dev/mqueue", "mqueue", NOSUID_NODEV_NOEXEC, None,
               "POSIX message queues of this IPC namespace")


def bind_etc_files(c):
    """/etc/hostname, /etc/hosts, /etc/resolv.conf: files labtool wrote for this container,
    bound over the image's. After the user's own mounts, as Docker does: a volume on /etc
    must not hide them."""
    for name in ("hostname", "hosts", "resolv.conf"):
        source = os.path.join(c.dir, name)
        target = f"{c.rootfs}/etc/{name}"
        if not os.path.exists(source):
            continue
        if not os.path.lexists(target):
            try:
                open(target, "a").close()       # a volume on /etc: the mount point goes in it
            except OSError:
                continue                        # (a read-only one: then the volume's file stays)
        explain.say("chroot", f"mount --bind <container>/{name} <rootfs>/etc/{name}",
                    "a file labtool wrote for this container")
        syscalls.mount(source, target, None, syscalls.MS_BIND)


def make_mountpoints(top):
    """The directories and files the container's mounts go on, made on the host side
    (like Docker's "init layer"): inside a user namespace root may not create them."""
    for d in ("proc", "sys", "dev", "etc"):
        os.makedirs(os.path.join(top, d), exist_ok=True)
    for name in ("hostname", "hosts", "resolv.conf"):
        path = os.path.join(top, "etc", name)
        if not os.path.lexists(path):
            open(path, "a").close()


def write_etc_files(c):
    """Write the container's /etc/hostname, /etc/hosts and /etc/resolv.conf (host side);
    with step 05 on, the last two are the network step's to write (``network._write_etc``)."""
    with open(os.path.join(c.dir, "hostname"), "w") as f:
        f.write(c.hostname + "\n")
    if any(step.name == "network" for step in c.steps):
        return
    with open(os.path.join(c.dir, "hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"127.0.1.1\t{c.hostname}\n")
    try:
        with open("/etc/resolv.conf") as f:
            # a nameserver on the host's loopback is not reachable from the container's
            lines = [line for line in f if not line.startswith("nameserver 127.")]
    except OSError:
        lines = []
    with open(os.path.join(c.dir, "resolv.conf"), "w") as f:
        f.writelines(lines)


# --- the step, as runtime.py calls it ----------------------------------------------------

def prepare(c):
    """Host side: give the container its own copy of the image's files (until step 04)."""
    if c.storage == "vfs":
        explain.say("chroot", f"copy {len(c.image.layers)} layer(s) -> <rootfs>",
                    "vfs driver: a private copy of the image")
        copy_layers(c.image.layers, c.rootfs)
        make_mountpoints(c.rootfs)
    else:
        os.makedirs(c.rootfs, exist_ok=True)     # the overlay step mounts the image here
    if "mnt" in c.namespaces:
        write_etc_files(c)
    else:
        # Without a mount namespace a /proc mounted for the container is a host mount:
        # mount it from here and take it down in teardown. It shows the *host's*
        # processes, which is exactly the lesson of notebook 01.
        proc = os.path.join(c.rootfs, "proc")
        explain.say("chroot", "mount proc on <rootfs>/proc", "a host mount: no mount namespace yet")
        syscalls.mount("proc", proc, "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)


def in_child(c):
    """Inside the child: switch to the container's root filesystem."""
    if "mnt" in c.namespaces:
        make_mounts_private()
        mount_kernel_filesystems(c)
        for step in c.steps:          # later steps' mounts from host paths (volumes: step 04)
            if hasattr(step.module, "before_pivot_root"):
                step.module.before_pivot_root(c)
        bind_etc_files(c)
        pivot_root(c.rootfs)
    else:
        chroot(c.rootfs)


def teardown(c):
    """Host side: unmount whatever is still mounted in the container's directory."""
    mounts.unmount_under(c.dir)


# --- the escape demo: python -m labtool.rootfs escape ROOTFS [--pivot-root] ---------------

def _escape_demo(rootfs, use_pivot_root):
    """Enter ``rootfs`` (chroot, or pivot_root in a new mount namespace), try ``escape``.

    Runs in a fresh process (never inside a Jupyter kernel). Exit 0: we got out.
    """
    host_root = os.stat("/")
    pid = os.fork()
    if pid == 0:
        try:
            if use_pivot_root:
                syscalls.unshare(syscalls.CLONE_NEWNS)
                make_mounts_private()
                pivot_root(rootfs)
            else:
                chroot(rootfs)
            print("inside:        / holds", " ".join(sorted(os.listdir("/"))[:8]), "...", flush=True)
            escape()
            print("after escape:  / holds", " ".join(sorted(os.listdir("/"))[:8]), "...", flush=True)
            out = (os.stat("/").st_dev, os.stat("/").st_ino) == (host_root.st_dev, host_root.st_ino)
            print("ESCAPED: this is the host's / again" if out else "still inside: the escape failed", flush=True)
            os._exit(0 if out else 1)
        except BaseException as e:  # report, never fall back into the parent's code
            print(f"error: {e}", flush=True)
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "escape":
        sys.exit("usage: python -m labtool.rootfs escape ROOTFS [--pivot-root]")
    explain.enabled = "--explain" in args
    sys.exit(_escape_demo(os.path.abspath(args[1]), "--pivot-root" in args))
