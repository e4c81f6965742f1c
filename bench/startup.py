"""How long does it take to start a container that does nothing?

Measures the wall time, from our fork to the command's exit, of running ``/bin/true`` in
the busybox image with:

    labtool   ``labtool run --rm [--network none] busybox true`` of this checkout, run the
              way the installed ``labtool`` command runs it (/usr/local/bin/labtool:
              ``python -IS``, the checkout first on sys.path, ``labtool.client.main``), with the venv
              interpreter that ``make lab`` installs (/opt/labtool/venv/bin/python, when
              it exists) in the default mode: a thin client hands the command to the warm
              labtool daemon (engine/daemon.py); and with ``LABTOOL_DAEMON=0`` (the command
              is a process of its own that does everything), with the venv's interpreter
              and with the one running this script. The table says which line is which mode.
    runc      ``runc run`` of an OCI bundle whose rootfs is a copy of the same image layer
              (runc's default namespaces: pid, network, ipc, uts, mount)
    crun      the same bundle, only if crun is installed and works as it is
    floor     ``unshare --fork --pid --mount --uts --ipc --net --mount-proc chroot ROOTFS
              /bin/true``: namespaces and a chroot with no runtime around them

and prints the median, p10 and p90 of each, and each median as a multiple of runc's and
of the floor's.

Why interleaved: the runs go round-robin (A B C A B C ...), not all of A then all of B.
A VM's speed drifts (other guests, CPU frequency, page cache, a background job), and
round-robin spreads any drift over every command alike instead of charging it to
whichever command happened to run during it.

Nothing outside a temporary directory is touched: labtool gets its own LABTOOL_ROOT there
(the first, untimed run makes the busybox image in it), the bundle and runc's state live
there too, and all of it is removed at the end, after checking nothing is mounted in it.

Needs: root, Python 3.10+ (stdlib only), util-linux (unshare, chroot), busybox-static
(for labtool's busybox image) and runc (``apt-get install runc``; without it the runc
column is skipped).

    sudo python bench/startup.py [--runs N] [--quick] [--warmup N]
"""

import argparse
import glob
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = "/opt/labtool/venv"
VENV_PYTHON = f"{VENV}/bin/python"
# With this set (it often is, in CI and sandboxes) every labtool run compiles all of
# labtool's modules from source again (5 ms or more here), which an installed labtool
# does not; the default is to unset it and keep the bytecode in the temp directory.
UNSET_FOR_LABTOOL = ("PYTHONDONTWRITEBYTECODE",)


class Failed(Exception):
    """A command we measure did not succeed: the numbers would mean nothing."""


# --- small helpers -----------------------------------------------------------------------

def first_line(argv):
    """The first line a tool prints (for versions), or a note why there is none."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "(no output)"


def mounts_under(path):
    """Mount points at or below ``path``, from /proc/self/mountinfo, deepest first."""
    path = os.path.realpath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            # the kernel writes space, tab, newline and backslash as octal: \040 ...
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def labtool_version():
    """The checkout's commit, and whether labtool/ has changes on top of it."""
    head = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "labtool"],
                           capture_output=True, text=True).stdout.strip()
    return (head or "(not a git checkout)") + (" + uncommitted changes in labtool/" if dirty else "")


def percentiles(samples):
    """(median, p10, p90) of a list of seconds, in milliseconds."""
    ms = [s * 1000 for s in samples]
    if len(ms) < 2:
        return ms[0], ms[0], ms[0]
    deciles = statistics.quantiles(ms, n=10, method="inclusive")
    return statistics.median(ms), deciles[0], deciles[8]


# --- what we measure ---------------------------------------------------------------------

class Command:
    """One command line to time, with the environment and directory to run it in."""

    def __init__(self, label, argv, env=None, cwd=None, note=""):
        self.label, self.argv, self.env, self.cwd, self.note = label, argv, env, cwd, note
        self.samples = []

    def run(self, argv=None):
        """Run once; return the wall time in seconds. Raise Failed unless it exits 0."""
        argv = argv or self.argv
        start = time.perf_counter()
        done = subprocess.run(argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise Failed(f"{self.label}: exit {done.returncode}: {shlex.join(argv)}\n"
                         + done.stderr.decode(errors="replace").strip())
        return elapsed

    def shown(self):
        """The exact command line, with the environment variables that matter."""
        env = ""
        if self.env is not None:
            unset = [k for k in UNSET_FOR_LABTOOL if k in os.environ and k not in self.env]
            env = "".join(f"-u {k} " for k in unset)
            env += " ".join(f"{k}={shlex.quote(self.env[k])}" for k in
                            ("LABTOOL_ROOT", "LABTOOL_DAEMON", "PYTHONPATH", "PYTHONPYCACHEPREFIX") if k in self.env)
            env = f"env {env} "
        where = f"(cd {shlex.quote(self.cwd)} && " if self.cwd else ""
        return f"{where}{env}{shlex.join(self.argv)}{')' if where else ''}"


class OCIRuntime(Command):
    """``runc run`` / ``crun run`` of the bundle; every run needs a fresh container id."""

    def __init__(self, label, binary, state_dir, bundle, id_prefix):
        self.binary, self.state_dir, self.bundle, self.id_prefix = binary, state_dir, bundle, id_prefix
        self.count = 0
        super().__init__(label, [binary, "--root", state_dir, "run", "--bundle", bundle, f"{id_prefix}N"])

    def run(self, argv=None):
        self.count += 1
        return super().run(self.argv[:-1] + [f"{self.id_prefix}{self.count}"])

    def leftovers(self):
        """Containers this runtime still knows about in our state directory."""
        if not os.path.isdir(self.state_dir):
            return []
        out = subprocess.run([self.binary, "--root", self.state_dir, "list", "-q"],
                             capture_output=True, text=True)
        return out.stdout.split()


def labtool_env(root, pycache):
    """labtool's environment: our LABTOOL_ROOT, this checkout first on the path, and
    (unless ``pycache`` is None) compiled bytecode kept in ``pycache``, as a user's
    installed labtool has it, without writing __pycache__ into the checkout."""
    env = dict(os.environ, LABTOOL_ROOT=root, PYTHONPATH=REPO)
    if pycache:
        for k in UNSET_FOR_LABTOOL:
            env.pop(k, None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


# What the installed ``labtool`` command runs (/usr/local/bin/labtool, written by
# vagrant/provision.sh from labtool.client.LAUNCHER): python -I -S (isolated, no site), this
# checkout's package put first on the path. (-I ignores PYTHON* variables: the bytecode goes
# to the checkout's __pycache__, as ``make lab``'s compileall puts it there too.)
def launcher_argv(python):
    return [python, "-IS", "-c", f"import sys; sys.path.insert(0, {REPO!r}); from labtool.client import main; main()"]


def labtool_commands(interpreters, env, network_flag):
    """With the venv's interpreter, the default mode: through the labtool daemon; then one
    command per interpreter with LABTOOL_DAEMON=0 (each command a process of its own)."""
    args = ["run", "--rm"] + (["--network", "none"] if network_flag else []) + ["busybox", "true"]
    note = "every step labtool has (--upto full, the default)"
    label, python = interpreters[0]
    commands = [Command(label.replace("labtool", "labtool daemon", 1), launcher_argv(python) + args,
                        env=dict(env), cwd=REPO,
                        note=note + "; the default: a thin client, a warm daemon's spare worker runs it")]
    commands += [Command(label.replace("labtool", "labtool in-process", 1), launcher_argv(python) + args,
                         env=dict(env, LABTOOL_DAEMON="0"), cwd=REPO,
                         note=note + "; LABTOOL_DAEMON=0: the command does everything itself")
                 for label, python in interpreters]
    return commands


def supports_network_flag(python, env):
    """Does this labtool's ``run`` take ``--network``? (It is being added.)"""
    out = subprocess.run([python, "-m", "labtool", "run", "--help"], env=env, cwd=REPO,
                         capture_output=True, text=True)
    return "--network" in out.stdout


def image_rootfs_layers(root):
    """The unpacked layer directories of busybox:latest in labtool's store under ``root``."""
    os.environ["LABTOOL_ROOT"] = root        # labtool.paths reads it; set before the import
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from labtool.images import store

    image = store.find("busybox:latest")
    if image is None:
        raise Failed(f"busybox:latest is not in the store under {root} after the first run")
    return image.layers


def make_bundle(bundle, layers):
    """An OCI bundle: a copy of the image's layers as rootfs, and runc's default config.json."""
    rootfs = os.path.join(bundle, "rootfs")
    os.makedirs(rootfs)
    for layer in layers:                      # lowest first, like labtool's vfs copy
        shutil.copytree(layer, rootfs, symlinks=True, dirs_exist_ok=True)
    # busybox's `true` applet is the link bin/true -> /bin/busybox in labtool's image
    argv = ["/bin/true"] if os.path.lexists(os.path.join(rootfs, "bin", "true")) else ["/bin/busybox", "true"]
    return rootfs, argv


def write_oci_config(bundle, argv):
    """``runc spec``, then: our command, no terminal. Namespaces stay runc's defaults."""
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["args"] = argv
    config["process"]["terminal"] = False
    config["root"] = {"path": "rootfs", "readonly": True}
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return config


def try_crun(state_dir, bundle, id_prefix):
    """crun as a column only when it works out of the box (FACTS: on this hybrid cgroup
    layout it needs /sys/fs/cgroup/unified hidden, which we will not do to the host)."""
    if not shutil.which("crun"):
        return None, "crun not installed: skipped"
    crun = OCIRuntime("crun", "crun", state_dir, bundle, id_prefix)
    try:
        crun.run()
    except Failed as e:
        reason = str(e).splitlines()[-1] if str(e).strip() else "failed"
        return None, f"crun does not work out of the box here, skipped: {reason}"
    return crun, ""


# --- the measurement ---------------------------------------------------------------------

def measure(commands, warmup, runs):
    """Warm up, then time ``runs`` rounds of every command, round-robin."""
    for _ in range(warmup):
        for c in commands:
            c.run()
    for i in range(runs):
        for c in commands:
            c.samples.append(c.run())
        print(f"\r  round {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def report(commands, by_label, quoted):
    """The table, then for each ``quoted`` labtool (the installed one, in each mode) its
    ratios and the verdict on the target: no slower than runc, the goal half of it."""
    runc, floor = by_label.get("runc"), by_label.get("floor")
    base = {name: percentiles(c.samples)[0] for name, c in (("runc", runc), ("floor", floor)) if c}
    width = max(len(c.label) for c in commands) + 2
    print(f"\n{'command':<{width}}{'median ms':>10}{'p10':>9}{'p90':>9}{'x runc':>9}{'x floor':>9}")
    for c in commands:
        median, p10, p90 = percentiles(c.samples)
        ratios = "".join(f"{median / base[n]:>9.2f}" if n in base else f"{'-':>9}" for n in ("runc", "floor"))
        mark = " *" if c in quoted else ""
        print(f"{c.label + mark:<{width}}{median:>10.1f}{p10:>9.1f}{p90:>9.1f}{ratios}")
    print("\n* the labtool that `make lab` installs, in each mode; its ratios are the ones to quote:")
    for c in quoted:
        median = percentiles(c.samples)[0]
        print(f"  {c.label}:")
        for name in ("runc", "floor"):
            if name in base:
                print(f"    labtool/{name} = {median:.1f} / {base[name]:.1f} ms = {median / base[name]:.2f}")
        if "runc" in base:
            ratio = median / base["runc"]
            verdict = "goal met (half of runc's time or less)" if ratio <= 0.5 else \
                "target met (no slower than runc); the goal is 0.5" if ratio <= 1.0 else "target NOT met"
            print(f"    target (issues 2 and 6): ratio <= 1.0, goal 0.5: {verdict}")
    print("\nexact command lines:")
    for c in commands:
        print(f"  {c.label}: {c.shown()}" + (f"   [{c.note}]" if c.note else ""))


def cleanup(work, oci_runtimes, id_prefix):
    """Leave nothing behind: containers, cgroups runc made, mounts, the temp directory."""
    problems = []
    for rt in oci_runtimes:
        for cid in rt.leftovers():
            subprocess.run([rt.binary, "--root", rt.state_dir, "delete", "--force", cid],
                           capture_output=True)
            problems.append(f"{rt.label} container {cid} was left; deleted it")
    # runc puts a container with no cgroupsPath in /sys/fs/cgroup/<controller>/<id>; it
    # removes them itself, but a killed run could leave some
    for d in glob.glob(f"/sys/fs/cgroup/*/{id_prefix}*") + glob.glob(f"/sys/fs/cgroup/*/*/{id_prefix}*"):
        try:
            os.rmdir(d)
            problems.append(f"removed leftover cgroup {d}")
        except OSError as e:
            problems.append(f"leftover cgroup {d}: {e.strerror}")
    # the labtool daemon (the default) of the bench's root goes with it
    subprocess.run([sys.executable, "-m", "labtool", "system", "stop-daemon"], capture_output=True,
                   env=dict(os.environ, LABTOOL_ROOT=os.path.join(work, "labtool-root")), cwd=REPO)
    left = os.path.join(work, "labtool-root", "lib", "containers")
    if os.path.isdir(left) and os.listdir(left):
        problems.append(f"labtool left container directories after --rm: {os.listdir(left)}")
    for point in mounts_under(work):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
        problems.append(f"unmounted leftover mount {point}")
    still = mounts_under(work)
    if still:
        problems.append(f"NOT removing {work}: still mounted: {still}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    for p in problems:
        print(f"cleanup: {p}", file=sys.stderr)
    return not still


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="timed runs per command (default 30)")
    p.add_argument("--quick", action="store_true", help="5 timed runs per command")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs per command first (default 3)")
    p.add_argument("--no-pycache", action="store_true",
                   help="run labtool with the environment as it is: with PYTHONDONTWRITEBYTECODE "
                        "set, its modules are compiled at every run (default: cache the bytecode "
                        "in the temp directory)")
    a = p.parse_args()
    runs = 5 if a.quick else a.runs
    if runs < 1 or a.warmup < 0:
        p.error("--runs must be >= 1 and --warmup >= 0")
    if os.geteuid() != 0:
        sys.exit("bench/startup.py needs root (namespaces, mounts, runc): run it with sudo")

    # Which interpreters run labtool: the venv one first (the default), then ours.
    interpreters = []
    if os.access(VENV_PYTHON, os.X_OK):
        interpreters.append(("labtool (venv python)", VENV_PYTHON))
    # (the venv's python is a link to /usr/bin/python3: compare environments, not binaries)
    if not interpreters or os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        interpreters.append(("labtool (this python)", sys.executable))

    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
          f"kernel {platform.release()} {platform.machine()}")
    for label, python in interpreters:
        print(f"python:  {python} -> {first_line([python, '--version'])}")
    runc_found = shutil.which("runc")
    print(f"runc:    {first_line(['runc', '--version']) if runc_found else 'not found'}")
    print(f"unshare: {first_line(['unshare', '--version'])}")
    print(f"labtool: {REPO} at {labtool_version()}")
    print(f"runs:    {runs} timed per command after {a.warmup} warm-up, round-robin")

    work = tempfile.mkdtemp(prefix="labtool-bench-")
    id_prefix = f"labtool-bench-{os.getpid()}-"
    oci_runtimes = []
    ok = False
    try:
        root = os.path.join(work, "labtool-root")
        os.makedirs(root)
        env = labtool_env(root, None if a.no_pycache else os.path.join(work, "pycache"))
        network = supports_network_flag(interpreters[0][1], env)
        labtools = labtool_commands(interpreters, env, network)
        if a.no_pycache:
            print(f"bytecode: as the environment says (PYTHONDONTWRITEBYTECODE="
                  f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})")
        else:
            print("bytecode: cached (the client, python -IS: in the checkout's __pycache__, as `make lab` "
                  "compiles it; the daemon: in the temp directory, PYTHONPYCACHEPREFIX)")
        if network:
            print("labtool: `run --network` is supported: measuring with --network none")
        else:
            print("labtool: `run --network` is not supported yet: measuring without it "
                  "(labtool makes a new, empty network namespace anyway)")

        # The first run makes the busybox image in our LABTOOL_ROOT; not timed.
        made = labtools[0].run()
        print(f"first labtool run (makes the busybox image): {made * 1000:.0f} ms, not counted")

        bundle = os.path.join(work, "bundle")
        rootfs, argv = make_bundle(bundle, image_rootfs_layers(root))
        floor = Command("floor", ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net",
                                  "--mount-proc", "chroot", rootfs] + argv,
                        note="util-linux; no cgroup, no pivot_root, no /dev")
        commands = list(labtools)
        if runc_found:
            write_oci_config(bundle, argv)
            runc = OCIRuntime("runc", "runc", os.path.join(work, "runc-state"), bundle, id_prefix)
            runc.note = "default namespaces pid, network, ipc, uts, mount; read-only rootfs"
            oci_runtimes.append(runc)
            commands.append(runc)
            crun, why = try_crun(os.path.join(work, "crun-state"), bundle, id_prefix + "crun-")
            if crun:
                oci_runtimes.append(crun)
                commands.append(crun)
            else:
                print(why)
        else:
            print("runc not found: apt-get install runc  (runc column skipped)")
        commands.append(floor)

        measure(commands, a.warmup, runs)
        report(commands, {c.label: c for c in commands}, [labtools[0], labtools[-1]])
        ok = True
    except Failed as e:
        print(f"\nbench/startup.py: a command failed, no numbers:\n{e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        clean = cleanup(work, oci_runtimes, id_prefix)
    return 0 if ok and clean else 1


if __name__ == "__main__":
    sys.exit(main())
