"""The ``labtool`` command line: docker-style commands over the runtime and the stores.

    labtool run [--rm] [--upto STEP] [--explain] [--hostname NAME] [--pid|--ipc|--uts MODE]
                [--userns] [--user U] [--init] [-e K=V] [-w DIR] [--name NAME]
                [--memory B] [--memory-swap B] [--cpu-shares N] [--cpus N] [--cpuset-cpus L]
                [--pids-limit N] [--device D] [--cap-add CAP] [--cap-drop CAP]
                [--security-opt no-new-privileges] [--privileged] IMAGE [CMD...]
    labtool exec [-e K=V] [-w DIR] [-u USER] CONTAINER CMD...
    labtool images [-a]  labtool pull IMAGE     labtool push IMAGE
    labtool build [-t NAME] [-f FILE] [--build-arg K=V] [--target STAGE] [--no-cache] [-q] CONTEXT
    labtool history IMAGE   labtool tag SRC DST   labtool rmi [-f] IMAGE...   labtool save [-o FILE] IMAGE...
    labtool load [-i FILE]  labtool image ls|inspect|history|rm|tag|prune
    labtool login [-u USER] [-p PASS | --password-stdin] [SERVER]     labtool logout [SERVER]
    labtool stats [--no-stream] [CONTAINER...]
    labtool inspect CONTAINER|IMAGE...
    labtool rm [-f] [-v] CONTAINER...     labtool diff CONTAINER     labtool commit CONTAINER IMAGE
    labtool volume create|ls|inspect|rm|prune     labtool info
    labtool reset [--all]
    labtool notebooks --student DIR

Errors a user can fix print one line, ``labtool: ...``, and exit 125 (as docker does);
the container's own exit code is passed through otherwise.
"""

import argparse
import os
import sys

from labtool import paths, units
from labtool.errors import LabtoolError, NeedsRoot, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit 125, like docker."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _parser():
    p = _Parser(prog="labtool", description="Docker under the hood: a small, real container runtime.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="run a command in a new container", add_help=False)
    run.add_argument("--detach", "-d", action="store_true", help="run in the background; print the id")
    _container_flags(run)
    create = sub.add_parser("create", help="create a container without starting it", add_help=False)
    _container_flags(create)

    ex = sub.add_parser("exec", help="run a command in a running container", add_help=False)
    ex.add_argument("--help", action="help", help="show this help and exit")
    ex.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE")
    ex.add_argument("--workdir", "-w", default="", help="working directory inside the container")
    ex.add_argument("--user", "-u", default="", metavar="USER[:GROUP]")
    ex.add_argument("--explain", action="store_true", help="narrate every kernel action on stderr")
    ex.add_argument("--interactive", "-i", action="store_true", help="keep stdin open (attach yours)")
    ex.add_argument("--tty", "-t", action="store_true", help="a pseudo-terminal for the command")
    ex.add_argument("--privileged", action="store_true", help="every capability for this command (step 07)")
    ex.add_argument("container")
    ex.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")

    _image_commands(sub)
    _network_commands(sub)
    _storage_commands(sub)
    _registry_commands(sub)

    _lifecycle_commands(sub)

    stats = sub.add_parser("stats", help="CPU, memory, network, disk and pids of running containers")
    stats.add_argument("--no-stream", action="store_true", help="print one reading and exit")
    stats.add_argument("containers", nargs="*", metavar="CONTAINER")

    inspect = sub.add_parser("inspect", help="a container's (or an image's) configuration and state, as JSON")
    inspect.add_argument("containers", nargs="+", metavar="CONTAINER|IMAGE")

    reset = sub.add_parser("reset", help="remove every container and host object labtool made")
    reset.add_argument("--all", action="store_true", help="remove the images too")

    nb = sub.add_parser("notebooks", help="write learner copies of the notebooks")
    nb.add_argument("--student", required=True, metavar="DIR",
                    help="write copies with the solutions replaced by their TODO into DIR")
    nb.add_argument("--source", default=None, metavar="DIR", help="notebooks to copy (default: the lab's)")
    return p


def _container_flags(run):
    """The flags of ``labtool run`` and ``labtool create``: what the container will be."""
    run.add_argument("--help", action="help", help="show this help and exit")
    run.add_argument("--rm", action="store_true", help="remove the container when it exits")
    _storage_flags(run)
    run.add_argument("--upto", default="full", metavar="STEP",
                     help="only the steps up to STEP: chroot, namespaces, ..., privileged, full (the default)")
    run.add_argument("--explain", action="store_true", help="narrate every kernel action on stderr")
    run.add_argument("--hostname", "-h", default="", help="the container's hostname (needs a UTS namespace)")
    run.add_argument("--name", default="", help="a name for the container")
    run.add_argument("--env", "-e", action="append", default=[], metavar="KEY=VALUE",
                     help="set an environment variable")
    run.add_argument("--workdir", "-w", default="", help="working directory inside the container "
                     "(default: the image's WORKDIR, or /)")
    run.add_argument("--user", "-u", default="", metavar="USER[:GROUP]", help="run as this user (name or uid)")
    run.add_argument("--pid", default="private", metavar="MODE", help="PID namespace: private, host, container:NAME")
    run.add_argument("--ipc", default="private", metavar="MODE",
                     help="IPC namespace: private, shareable, host, container:NAME")
    run.add_argument("--network", "--net", default="bridge", metavar="MODE",
                     help="none, bridge (the default), host, container:NAME, or a network's name")
    run.add_argument("--uts", default="private", metavar="MODE", help="UTS namespace: private, host")
    net = run.add_argument_group("network (step 05)")
    net.add_argument("--publish", "-p", action="append", default=[], metavar="[IP:][HOST:]CTR[/PROTO]",
                     help="publish a container port on the host, e.g. 8080:80")
    net.add_argument("--publish-all", "-P", action="store_true", help="publish every exposed port to a random one")
    net.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]", help="expose a port")
    net.add_argument("--link", action="append", default=[], metavar="NAME[:ALIAS]",
                     help="a legacy link to a running container on the default bridge")
    net.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                     help="one more name on a user-defined network")
    net.add_argument("--dns", action="append", default=[], metavar="IP", help="a nameserver for the container")
    net.add_argument("--add-host", action="append", default=[], metavar="NAME:IP", help="a line of /etc/hosts")
    run.add_argument("--userns", action="store_true",
                     help="a user namespace: root inside is uid 100000 outside")
    run.add_argument("--init", action="store_true", help="a tiny init as PID 1 that reaps and forwards signals")
    limits = run.add_argument_group("resource limits (step 03, cgroups)")
    limits.add_argument("--memory", "-m", default="", metavar="BYTES", help="memory limit, e.g. 64m (units b k m g)")
    limits.add_argument("--memory-swap", default="", metavar="BYTES",
                        help="memory plus swap; -1 for unlimited swap (default: twice --memory)")
    limits.add_argument("--cpu-shares", "-c", type=int, default=0, metavar="N",
                        help="CPU weight against other busy containers (default 1024)")
    limits.add_argument("--cpus", type=float, default=0.0, metavar="N", help="at most N CPUs' worth of time, e.g. 0.5")
    limits.add_argument("--cpuset-cpus", default="", metavar="LIST", help="run only on these CPUs, e.g. 0 or 0-1")
    limits.add_argument("--pids-limit", type=int, default=0, metavar="N", help="at most N processes (-1: unlimited)")
    limits.add_argument("--device", action="append", default=[], metavar="HOST[:CONTAINER][:rwm]",
                        help="give the container a host device")
    caps = run.add_argument_group("capabilities (step 06) and full privileges (step 07)")
    caps.add_argument("--cap-add", action="append", default=[], metavar="CAP",
                      help="give root in the container this capability (NET_ADMIN, CAP_SYS_TIME, ALL)")
    caps.add_argument("--cap-drop", action="append", default=[], metavar="CAP",
                      help="take this capability away (CHOWN, NET_RAW, ALL)")
    caps.add_argument("--privileged", action="store_true",
                      help="every capability, every host device, no masked paths (step 07)")
    caps.add_argument("--security-opt", action="append", default=[], metavar="no-new-privileges",
                      help="no-new-privileges: set-user-ID programs and file capabilities raise nothing")
    run.add_argument("--entrypoint", default=None, metavar="CMD",
                     help="replace the image's ENTRYPOINT (--entrypoint sh: a shell to look around)")
    run.add_argument("--env-file", action="append", default=[], metavar="FILE",
                     help="read KEY=VALUE lines from FILE")
    run.add_argument("--interactive", "-i", action="store_true", help="keep stdin open (attach yours)")
    run.add_argument("--tty", "-t", action="store_true", help="a pseudo-terminal for the command")
    run.add_argument("--restart", default="no", metavar="POLICY",
                     help="no, on-failure[:N], always, unless-stopped")
    run.add_argument("image")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD")


def _lifecycle_commands(sub):
    """ps, logs, start, stop, kill, restart, pause, unpause, wait, rename, top, system boot."""
    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("--all", "-a", action="store_true", help="all of them, not only the running ones")
    ps.add_argument("--quiet", "-q", action="store_true", help="only the ids")
    ps.add_argument("--no-trunc", action="store_true", help="full ids and commands")
    ps.add_argument("--filter", "-f", action="append", default=[], metavar="KEY=VALUE",
                    help="name=..., status=created|running|paused|restarting|exited|dead, id=...")
    logs = sub.add_parser("logs", help="what a container printed")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing as it runs")
    logs.add_argument("--tail", "-n", default="all", metavar="N", help="only the last N lines")
    logs.add_argument("--timestamps", "-t", action="store_true", help="the time of each line")
    logs.add_argument("container")
    start = sub.add_parser("start", help="start stopped containers")
    start.add_argument("--attach", "-a", action="store_true", help="print its output; exit with its code")
    start.add_argument("--interactive", "-i", action="store_true", help="with -a: give it your stdin (if it was created with -i)")
    start.add_argument("containers", nargs="+", metavar="CONTAINER")
    for name, what in (("stop", "stop running containers (SIGTERM, then SIGKILL)"),
                       ("restart", "stop, then start containers")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--time", "-t", type=int, default=10, metavar="SECONDS",
                       help="seconds to wait before SIGKILL (default 10)")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
    kill = sub.add_parser("kill", help="send a signal to containers (default SIGKILL)")
    kill.add_argument("--signal", "-s", default="KILL", metavar="SIGNAL")
    kill.add_argument("containers", nargs="+", metavar="CONTAINER")
    for name, what in (("pause", "freeze every process of containers"), ("unpause", "thaw them")):
        sub.add_parser(name, help=what).add_argument("containers", nargs="+", metavar="CONTAINER")
    sub.add_parser("wait", help="wait for containers to stop; print their exit codes").add_argument(
        "containers", nargs="+", metavar="CONTAINER")
    rename = sub.add_parser("rename", help="rename a container")
    rename.add_argument("container")
    rename.add_argument("new_name")
    sub.add_parser("top", help="the processes of a container").add_argument("container")
    system = sub.add_parser("system", help="boot: start containers whose restart policy says so; "
                                           "stop-daemon: stop the labtool daemon")
    system.add_argument("action", choices=["boot", "stop-daemon"])


def _network_commands(sub):
    """Step 05's commands: network create|ls|inspect|rm|prune|connect|disconnect, port."""
    network = sub.add_parser("network", help="manage networks: create, ls, inspect, rm, prune, connect, disconnect")
    actions = network.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    create = actions.add_parser("create", help="a user-defined bridge network")
    create.add_argument("--driver", "-d", default="bridge", help="the driver (bridge)")
    create.add_argument("--ipam-driver", default="default", choices=["default"],
                        help="who hands out addresses: labtool's own IPAM, called 'default' as in Docker")
    create.add_argument("--subnet", default="", metavar="CIDR", help="e.g. 10.10.0.0/24 (default: a free one)")
    create.add_argument("--gateway", default="", metavar="IP", help="the bridge's address (default: the first)")
    create.add_argument("--ip-range", default="", metavar="CIDR", help="containers' addresses from this range")
    create.add_argument("--opt", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="icc=false: containers on it may not talk to each other")
    create.add_argument("name")
    actions.add_parser("ls", help="list networks").add_argument("--quiet", "-q", action="store_true")
    actions.add_parser("inspect", help="networks as JSON").add_argument("names", nargs="+", metavar="NETWORK")
    actions.add_parser("rm", help="remove networks").add_argument("names", nargs="+", metavar="NETWORK")
    actions.add_parser("prune", help="remove unused networks").add_argument("--force", "-f", action="store_true")
    connect = actions.add_parser("connect", help="connect a container to a network (live)")
    connect.add_argument("--alias", action="append", default=[], metavar="ALIAS", help="one more name on it")
    disconnect = actions.add_parser("disconnect", help="disconnect a container from a network (live)")
    disconnect.add_argument("--force", "-f", action="store_true")
    for p in (connect, disconnect):
        p.add_argument("network")
        p.add_argument("container")
    port = sub.add_parser("port", help="the published ports of a container")
    port.add_argument("container")
    port.add_argument("private", nargs="?", metavar="PORT[/PROTO]")


def _image_commands(sub):
    """Notebook 04b's commands: images, build, history, tag, rmi, save, load, image ACTION."""
    images = sub.add_parser("images", help="list images")
    images.add_argument("--all", "-a", action="store_true", help="the intermediate images of builds too")
    images.add_argument("--quiet", "-q", action="store_true", help="only the ids")
    images.add_argument("repository", nargs="?", default="", metavar="REPOSITORY[:TAG]")
    build = sub.add_parser("build", help="build an image from a Dockerfile")
    build.add_argument("--tag", "-t", action="append", default=[], metavar="NAME[:TAG]")
    build.add_argument("--file", "-f", default="", metavar="FILE", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set a build argument")
    build.add_argument("--target", default="", metavar="STAGE", help="build up to this stage, and tag it")
    build.add_argument("--no-cache", action="store_true", help="run every step again")
    build.add_argument("--quiet", "-q", action="store_true", help="print only the image id")
    build.add_argument("context", metavar="CONTEXT")
    history = sub.add_parser("history", help="the layers of an image, one per instruction")
    _history_flags(history)
    tag = sub.add_parser("tag", help="give an image another name")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    rmi = sub.add_parser("rmi", help="remove images")
    rmi.add_argument("--force", "-f", action="store_true", help="remove the tags even if a container uses it")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    save = sub.add_parser("save", help="write images to a tar archive (an OCI image layout)")
    save.add_argument("--output", "-o", metavar="FILE", help="the archive to write (default: standard output)")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    load = sub.add_parser("load", help="read images from a tar archive made by save")
    load.add_argument("--input", "-i", metavar="FILE", help="the archive to read (default: standard input)")
    # one parser for "image ACTION" (each parser costs start-up time of every labtool command)
    image = sub.add_parser("image", help="manage images: ls, inspect IMAGE..., history IMAGE, rm IMAGE..., "
                                         "tag SRC DST, prune [-a] [-f]")
    image.add_argument("action", nargs="?", choices=["ls", "inspect", "history", "rm", "tag", "prune"])
    image.add_argument("names", nargs="*", metavar="IMAGE")
    image.add_argument("--all", "-a", action="store_true", help="ls: intermediate images too; prune: unused too")
    image.add_argument("--force", "-f", action="store_true", help="rm: as rmi -f; prune: do not ask")
    image.add_argument("--no-trunc", action="store_true", help="history: full ids and commands")
    image.add_argument("--quiet", "-q", action="store_true", help="ls, history: only the ids")


def _history_flags(history):
    history.add_argument("--no-trunc", action="store_true", help="full ids and commands")
    history.add_argument("--human", "-H", default="true", choices=["true", "false"],
                         help="sizes and dates in human form (default true)")
    history.add_argument("--quiet", "-q", action="store_true", help="only the image ids")
    history.add_argument("image", metavar="IMAGE")


def _registry_commands(sub):
    """Step 04b's registry commands: login, logout, pull, push."""
    login = sub.add_parser("login", help="log in to a registry (credentials stored for pull and push)")
    login.add_argument("--username", "-u", default="", help="user name")
    login.add_argument("--password", "-p", default="", help="password (prefer --password-stdin)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.add_argument("server", nargs="?", default="", metavar="SERVER", help="HOST[:PORT] of the registry")
    logout = sub.add_parser("logout", help="forget the credentials for a registry")
    logout.add_argument("server", nargs="?", default="", metavar="SERVER")
    sub.add_parser("pull", help="download an image from a registry").add_argument("image", metavar="IMAGE[:TAG]")
    sub.add_parser("push", help="upload an image to a registry").add_argument("image", metavar="IMAGE[:TAG]")


def _storage_flags(run):
    """Step 04's flags of ``labtool run``."""
    run.add_argument("--volume", "-v", action="append", default=[], metavar="[SRC:]DST[:ro]",
                     help="a bind mount (SRC a host path) or a volume (SRC a name, or none: anonymous)")
    run.add_argument("--tmpfs", action="append", default=[], metavar="DST[:OPTIONS]",
                     help="a tmpfs at DST, e.g. /run:size=64m")
    run.add_argument("--read-only", action="store_true", help="mount the container's root read-only")
    run.add_argument("--volumes-from", action="append", default=[], metavar="CONTAINER[:ro]",
                     help="mount the volumes of another container")


def _storage_commands(sub):
    """Step 04's commands: rm, diff, commit, volume, info."""
    rm = sub.add_parser("rm", help="remove containers")
    rm.add_argument("--force", "-f", action="store_true", help="kill a running container first")
    rm.add_argument("--volumes", "-v", action="store_true", help="remove its anonymous volumes too")
    rm.add_argument("containers", nargs="+", metavar="CONTAINER")
    diff = sub.add_parser("diff", help="list the files a container added (A), changed (C), deleted (D)")
    diff.add_argument("container")
    commit = sub.add_parser("commit", help="make a new image from a container's changes")
    commit.add_argument("container")
    commit.add_argument("image", metavar="IMAGE[:TAG]")
    sub.add_parser("info", help="storage driver, cgroup version, kernel, counts")

    # one parser for all five (each parser costs start-up time of every labtool command)
    volume = sub.add_parser("volume", help="manage volumes: create [NAME], ls, inspect NAME..., rm NAME..., "
                                           "prune [-a] [-f]")
    volume.add_argument("action", choices=VOLUME_ACTIONS)
    volume.add_argument("names", nargs="*", metavar="NAME")
    volume.add_argument("--all", "-a", action="store_true", help="prune: named volumes too")
    volume.add_argument("--force", "-f", action="store_true", help="prune: do not ask")


# labtool volume ACTION and what follows it
VOLUME_ACTIONS = {"create": "[NAME]", "ls": "", "inspect": "NAME...", "rm": "NAME...", "prune": "[-a] [-f]"}


def _needs_root(what):
    if os.geteuid() != 0:
        raise NeedsRoot(what)


def _needs_a_terminal(tty, interactive):
    """-it relays a terminal: with stdin a pipe or a file, the shell would wait for keys that never come."""
    if tty and interactive and not sys.stdin.isatty():
        raise UsageError("the input device is not a TTY: -it needs a terminal; for piped input use -i without -t")


def _env(flags):
    """-e KEY=VALUE, or -e KEY to pass the caller's value on (as docker does)."""
    return [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in flags]


def _spec(a):
    """The ContainerSpec that the flags of ``run`` / ``create`` describe."""
    from labtool import capabilities, mounts
    from labtool.spec import Capabilities, ContainerSpec, Namespaces, Network, Process

    process = Process(args=a.args, cwd=a.workdir, user=a.user)
    process.env += _env_files(a.env_file) + _env(a.env)
    spec = ContainerSpec(image=a.image, process=process, name=a.name, hostname=a.hostname,
                         upto=a.upto, explain=a.explain, remove=a.rm, init=a.init,
                         namespaces=Namespaces(pid=a.pid, net=a.network, ipc=a.ipc, uts=a.uts,
                                               user="private" if a.userns else "host"),
                         resources=_resources(a), tty=a.tty, interactive=a.interactive, restart=a.restart,
                         privileged=a.privileged)
    if a.entrypoint is not None:       # one program, as in Docker ("" clears the image's)
        spec.entrypoint = [a.entrypoint] if a.entrypoint else []
    spec.mounts = [mounts.parse_volume(v) for v in a.volume] + [mounts.parse_tmpfs(t) for t in a.tmpfs]
    spec.read_only, spec.volumes_from = a.read_only, a.volumes_from
    spec.capabilities = Capabilities(add=a.cap_add, drop=a.cap_drop,
                                     no_new_privileges=capabilities.parse_security_opt(a.security_opt))
    spec.network = Network(aliases=a.network_alias, dns=a.dns, add_hosts=a.add_host, links=a.link,
                           publish=a.publish, publish_all=a.publish_all, expose=a.expose)
    return spec


def _env_files(files):
    """--env-file: KEY=VALUE per line; # comments and blank lines skipped; KEY alone: ours."""
    found = []
    for name in files:
        try:
            with open(name) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"--env-file {name}: {e.strerror.lower()}") from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return _env(found)


def cmd_run(a):
    from labtool import runtime
    from labtool.engine import lifecycle, supervisor

    _needs_root("labtool run")
    spec = _spec(a)
    if not a.detach:
        _needs_a_terminal(a.tty, a.interactive)
        return runtime.run(spec)
    if spec.remove and spec.restart != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    c = lifecycle.create(spec)
    try:
        supervisor.spawn(c.id)
    except LabtoolError:
        if spec.remove:
            runtime.remove(c.dir, volumes=True)
        raise
    print(c.id)
    return 0


def cmd_create(a):
    from labtool.engine import lifecycle

    _needs_root("labtool create")
    print(lifecycle.create(_spec(a)).id)
    return 0


def _each(names, action):
    """Do ``action`` for each container (network, volume, image) like docker: go on after a
    failure, report each one: its name, or the lines the action returns (rmi's Untagged/Deleted)."""
    failed = 0
    for name in names:
        try:
            lines = action(name)
            for line in lines if isinstance(lines, list) else [name]:
                print(line)
        except LabtoolError as e:
            print(f"labtool: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_start(a):
    from labtool import paths
    from labtool.engine import containers, lifecycle, logs

    _needs_root("labtool start")
    if not a.attach:
        return _each(a.containers, lifecycle.start)
    if len(a.containers) != 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    if a.interactive:                  # stdin too: supervise it from here, as run does
        _needs_a_terminal(containers.find(a.containers[0]).config.get("tty", False), True)
        return lifecycle.start_attached(a.containers[0])
    record = containers.find(a.containers[0])
    offset = logs.size(paths.container_dir(record.id))      # what it prints from now on
    lifecycle.start(record.id)
    return _follow(record, logs, containers, offset=offset)


def _follow(record, logs, containers, offset=None, tail=None, timestamps=False):
    """Copy a container's log to our stdout/stderr as it grows, until it stops; its exit code."""
    directory = paths.container_dir(record.id)
    still = lambda: containers.load(record.id).status in ("running", "paused", "restarting")  # noqa: E731
    for entry in logs.follow(directory, tail=tail, still_running=still, offset=offset):
        _print_entry(entry, timestamps)
    return containers.load(record.id).state.get("ExitCode", 0)


def _print_entry(entry, timestamps):
    stream = sys.stdout if entry.get("stream") == "stdout" else sys.stderr
    stream.write((entry["time"] + " " if timestamps else "") + entry["log"])
    stream.flush()


def cmd_logs(a):
    from labtool.engine import containers, logs

    record = containers.find(a.container)
    tail = None if a.tail == "all" else _count(a.tail, "--tail")
    if a.follow:
        _follow(record, logs, containers, tail=tail, timestamps=a.timestamps)
        return 0
    for entry in logs.read(paths.container_dir(record.id), tail):
        _print_entry(entry, a.timestamps)
    return 0


def _count(text, flag):
    if not text.isdigit():
        raise UsageError(f"invalid {flag} '{text}': a number or 'all'")
    return int(text)


def cmd_stop(a):
    from labtool.engine import lifecycle

    _needs_root("labtool stop")
    return _each(a.containers, lambda n: lifecycle.stop(n, a.time))


def cmd_restart(a):
    from labtool.engine import lifecycle

    _needs_root("labtool restart")
    return _each(a.containers, lambda n: lifecycle.restart(n, a.time))


def cmd_kill(a):
    from labtool import process
    from labtool.engine import lifecycle

    _needs_root("labtool kill")
    sig = process.parse_signal(a.signal)
    if sig is None:
        raise UsageError(f"invalid signal: {a.signal}")
    return _each(a.containers, lambda n: lifecycle.kill(n, sig))


def cmd_pause(a):
    from labtool.engine import lifecycle

    _needs_root(f"labtool {a.command}")
    return _each(a.containers, lifecycle.pause if a.command == "pause" else lifecycle.unpause)


def cmd_wait(a):
    from labtool.engine import lifecycle

    for name in a.containers:
        print(lifecycle.wait(name), flush=True)
    return 0


def cmd_rename(a):
    from labtool.engine import lifecycle

    lifecycle.rename(a.container, a.new_name)
    return 0


def cmd_top(a):
    from labtool.engine import lifecycle

    print(lifecycle.top(a.container), end="")
    return 0


def cmd_ps(a):
    from labtool.engine import ps

    filters = []
    for f in a.filter:
        key, sep, value = f.partition("=")
        if not sep or key not in ("name", "status", "id"):
            raise UsageError(f"invalid filter '{f}': use name=..., status=... or id=...")
        filters.append((key, value))
    found = ps.rows(all_=a.all, filters=filters, full=a.no_trunc)
    if a.quiet:
        for row in found:
            print(row[0])                   # none: no output at all, so $(labtool ps -q) is empty
    else:
        print(ps.table(found))
    return 0


def cmd_system(a):
    from labtool.engine import daemon, lifecycle

    _needs_root(f"labtool system {a.action}")
    if a.action == "stop-daemon":
        if daemon.stop_running():
            print("stopped the labtool daemon")
        return 0
    for name in lifecycle.boot():
        print(f"started {name}")
    return 0


def _resources(a):
    """--memory 64m and friends, in Docker's units, as a spec.Resources."""
    from labtool.cgroups import parse_bytes
    from labtool.spec import Resources

    shares = a.cpu_shares and min(max(a.cpu_shares, 2), 262144)   # the kernel's range, as docker clamps
    return Resources(memory=parse_bytes(a.memory, "--memory") if a.memory else 0,
                     memory_swap=parse_bytes(a.memory_swap, "--memory-swap") if a.memory_swap else 0,
                     cpu_shares=shares if a.cpu_shares >= 0 else a.cpu_shares, cpus=a.cpus,
                     cpuset_cpus=a.cpuset_cpus, pids_limit=a.pids_limit, devices=a.device)


def cmd_exec(a):
    from labtool import runtime

    _needs_root("labtool exec")
    if not a.args:
        raise UsageError("exec needs a command: labtool exec CONTAINER CMD...")
    _needs_a_terminal(a.tty, a.interactive)
    return runtime.exec_in(a.container, a.args, _env(a.env), a.workdir, a.user, a.explain,
                           interactive=a.interactive, tty=a.tty, privileged=a.privileged)


def cmd_images(a):
    from labtool.images import listing

    wanted = getattr(a, "repository", "")
    if a.quiet:
        for image_id in dict.fromkeys(row[2] for row in listing.images_rows(a.all, wanted)):
            print(image_id)                 # none: no output at all (not an empty line), as docker images -q
    else:
        print(listing.images_table(a.all, wanted))
    return 0


def cmd_build(a):
    from labtool.images import build

    _needs_root("labtool build")
    args = {}
    for item in a.build_arg:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise UsageError(f'invalid argument "{item}" for "--build-arg": use --build-arg NAME=VALUE')
        args[key] = value if sep else os.environ.get(key, "")
    image = build.build(build.Options(context=a.context, dockerfile=a.file, tags=a.tag, build_args=args,
                                      target=a.target, no_cache=a.no_cache, quiet=a.quiet))
    if a.quiet:
        print(image.id)
    return 0


def cmd_history(a):
    from labtool.images import listing

    image = listing.get(a.image)
    if a.quiet:
        rows = listing.history_rows(image, full=a.no_trunc)
        print("\n".join(r[0] for r in rows))
    else:
        print(listing.history_table(image, full=a.no_trunc, human=a.human == "true"))
    return 0


def cmd_tag(a):
    from labtool.images import listing, reference, store

    image = listing.get(a.source)
    reference.parse(a.target, default="")          # a name Docker would take, or a one-line error
    store.tag(image, a.target)
    return 0


def cmd_rmi(a):
    from labtool.images import remove

    _needs_root("labtool rmi")
    return _each(a.images, lambda name: list(remove.rmi(name, force=a.force)))


def cmd_save(a):
    from labtool.images import archive

    archive.save(a.images, a.output)
    return 0


def cmd_load(a):
    from labtool.images import archive

    _needs_root("labtool load")
    for line in archive.load(a.input):
        print(line)
    return 0


def cmd_image(a):
    """labtool image ACTION: the same commands under Docker's newer names."""
    import json

    from labtool.images import listing, remove

    if a.action is None:
        raise UsageError("image needs an action: ls, inspect, history, rm, tag or prune "
                         "(see 'labtool image --help')")
    needs = {"inspect": "IMAGE...", "history": "IMAGE", "rm": "IMAGE...", "tag": "SOURCE TARGET"}
    count = {"history": 1, "tag": 2}.get(a.action)
    usage = needs.get(a.action, "")
    if (usage and not a.names) or (count and len(a.names) != count) or (not usage and a.names):
        raise UsageError(f"usage: labtool image {a.action} {usage}".rstrip())
    if a.action == "ls":
        a.command = "images"
        return cmd_images(a)
    if a.action == "inspect":
        print(json.dumps([listing.inspect(listing.get(n)) for n in a.names], indent=4))
    elif a.action == "history":
        a.image, a.human = a.names[0], "true"
        return cmd_history(a)
    elif a.action == "rm":
        a.images = a.names
        return cmd_rmi(a)
    elif a.action == "tag":
        a.source, a.target = a.names
        return cmd_tag(a)
    elif a.action == "prune":
        _needs_root("labtool image prune")
        which = "all images without at least one container associated to them" if a.all else "all dangling images"
        if not a.force and not _confirmed(f"This will remove {which}."):
            return 0
        lines, freed = remove.prune(everything=a.all)
        if lines:
            print("Deleted Images:", *lines, "", sep="\n")
        print(f"Total reclaimed space: {units.human_size(freed)}")
    return 0


def _confirmed(warning):
    """Docker's question before a prune (-f skips it): yes only for y or yes."""
    print(f"WARNING! {warning}\nAre you sure you want to continue? [y/N] ", end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_stats(a):
    from labtool.cgroups import stats
    from labtool.engine import containers

    _needs_root("labtool stats")

    def targets():
        if not a.containers:
            return stats.running()
        found = []
        for name in a.containers:
            record, pid = containers.find_running(name)
            cgroup = stats.cgroups.find(record.id)
            if cgroup is None:
                raise LabtoolError(f"container {name} has no cgroup (it runs with --upto before step 03)")
            found.append((record, pid, cgroup))
        return found

    if a.no_stream:
        print(stats.table(stats.measure(targets())))
        return 0
    while True:                      # like docker stats: refresh until Ctrl-C
        table = stats.table(stats.measure(targets()))
        print("\033[2J\033[H" + table, flush=True)


def cmd_inspect(a):
    import json

    from labtool.engine import containers

    from labtool.errors import ContainerNotFound
    from labtool.images import listing

    found = []
    for name in a.containers:            # a container by that name or id, else an image (as docker)
        try:
            found.append(containers.inspect(containers.find(name)))
        except ContainerNotFound:
            try:
                found.append(listing.inspect(listing.get(name)))
            except listing.NoSuchImage:
                raise LabtoolError(f"No such object: {name}") from None
    print(json.dumps(found, indent=4))
    return 0


def cmd_rm(a):
    from labtool.engine import lifecycle

    _needs_root("labtool rm")
    return _each(a.containers, lambda n: lifecycle.remove(n, force=a.force, volumes=a.volumes))


def cmd_diff(a):
    from labtool import changes

    for change in changes.diff(a.container):
        print(change)
    return 0


def cmd_commit(a):
    from labtool import changes

    _needs_root("labtool commit")
    print(changes.commit(a.container, a.image).id)
    return 0


def cmd_info(a):
    from labtool import info

    for label, value in info.info():
        print(f"{label}: {value}")
    return 0


def cmd_volume(a):
    import json

    from labtool import volumes

    _needs_root("labtool volume")
    usage = VOLUME_ACTIONS[a.action]
    if (usage == "NAME..." and not a.names) or (usage != "NAME..." and len(a.names) > (usage == "[NAME]")):
        raise UsageError(f"usage: labtool volume {a.action} {usage}".rstrip())
    if a.action == "create":
        print(volumes.create(*a.names).name)
    elif a.action == "ls":
        print(f"{'DRIVER':<10}VOLUME NAME")
        for v in volumes.all_volumes():
            print(f"{volumes.DRIVER:<10}{v.name}")
    elif a.action == "inspect":
        print(json.dumps([volumes.find(name).inspect() for name in a.names], indent=4))
    elif a.action == "rm":
        return 125 if _each(a.names, volumes.remove) else 0
    elif a.action == "prune":
        which = "local volumes" if a.all else "anonymous local volumes"
        if not a.force and not _confirmed(f"This will remove {which} not used by at least one container."):
            return 0
        removed, freed = volumes.prune(everything=a.all)
        if removed:
            print("Deleted Volumes:", *removed, "", sep="\n")
        print(f"Total reclaimed space: {units.human_size(freed)}")
    return 0


def cmd_network(a):
    import json

    from labtool import network
    from labtool.network import store

    _needs_root("labtool network")
    if a.action == "create":
        options = {}
        for item in a.opt:
            key, sep, value = item.partition("=")
            if not sep:
                raise UsageError(f"invalid option {item!r}: KEY=VALUE, e.g. icc=false")
            options[key] = value
        print(store.create(a.name, a.driver, a.subnet, a.gateway, a.ip_range, options)["Id"])
    elif a.action == "ls":
        store.find(store.DEFAULT)                     # Docker's bridge is always there
        rows = [(n["Id"][:12], n["Name"], n["Driver"]) for n in store.all_networks()]
        rows += [("host", "host", "host"), ("none", "none", "null")]
        if a.quiet:
            print("\n".join(r[0] for r in rows))
            return 0
        print(f"{'NETWORK ID':<15}{'NAME':<20}{'DRIVER':<10}SCOPE")
        for network_id, name, driver in rows:
            print(f"{network_id:<15}{name:<20}{driver:<10}local")
    elif a.action == "inspect":
        found, failed = [], 0
        for name in a.names:
            try:
                found.append(store.inspect(store.find(name)))
            except LabtoolError as e:
                print(f"labtool: {e}", file=sys.stderr)
                failed += 1
        print(json.dumps(found, indent=4))
        return 1 if failed else 0
    elif a.action == "rm":
        return _each(a.names, store.remove)
    elif a.action == "prune":
        if not a.force and not _confirmed("This will remove all custom networks not used by at least one container."):
            return 0
        removed = store.prune()
        if removed:
            print("Deleted Networks:", *removed, sep="\n")
    elif a.action == "connect":
        network.connect(a.network, a.container, a.alias)
    elif a.action == "disconnect":
        network.disconnect(a.network, a.container, a.force)
    return 0


def cmd_port(a):
    from labtool.engine import containers
    from labtool.network import ports

    record = containers.find(a.container)
    bindings = [ports.PortBinding.from_state(d) for d in record.state.get("Ports", [])] if record.running_pid else []
    lines = ports.lookup(bindings, a.private, a.container) if a.private else ports.format_port(bindings)
    for line in lines:
        print(line)


def cmd_login(a):
    import getpass

    from labtool.images import registry

    host = registry.resolve_host(a.server)
    if a.password and a.password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    password = a.password
    if a.password:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    elif a.password_stdin:
        if not a.username:
            raise UsageError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise UsageError("password is empty: nothing came on stdin")
    user, asked = a.username, not (a.username and password)
    if asked and not sys.stdin.isatty():
        raise UsageError("Cannot perform an interactive login from a non TTY device: use -u and --password-stdin")
    try:
        user = user or input("Username: ").strip()
        password = password or getpass.getpass("Password: ")
    except EOFError:
        raise UsageError("login needs a username and a password") from None
    where = registry.login(host, user, password)
    print(f"WARNING! Your password will be stored unencrypted in {where} (readable by root only).",
          file=sys.stderr)
    print("Login Succeeded")
    return 0


def cmd_logout(a):
    from labtool.images import registry

    host = registry.resolve_host(a.server)
    if registry.logout(host):
        print(f"Removing login credentials for {host}")
    else:
        print(f"Not logged in to {host}")
    return 0


def cmd_pull(a):
    from labtool.images import reference, registry

    registry.pull(a.image)
    print(reference.parse(a.image).name_and_tag)       # the full name, as docker pull ends
    return 0


def cmd_push(a):
    from labtool.images import registry

    registry.push(a.image)
    return 0


def cmd_reset(a):
    from labtool import reset

    _needs_root("labtool reset")
    for line in reset.reset(images=a.all):
        print(line)
    return 0


def cmd_notebooks(a):
    from labtool import notebooks

    for path in notebooks.write_student_copies(a.student, a.source):
        print(path)
    return 0


COMMANDS = {"run": cmd_run, "exec": cmd_exec, "images": cmd_images, "reset": cmd_reset, "notebooks": cmd_notebooks}
COMMANDS.update({"create": cmd_create, "start": cmd_start, "stop": cmd_stop, "restart": cmd_restart,  # 00
                 "kill": cmd_kill, "pause": cmd_pause, "unpause": cmd_pause, "wait": cmd_wait,
                 "rename": cmd_rename, "top": cmd_top, "ps": cmd_ps, "logs": cmd_logs, "system": cmd_system})
COMMANDS.update({"stats": cmd_stats, "inspect": cmd_inspect})                      # step 03
COMMANDS.update({"network": cmd_network, "port": cmd_port})                       # step 05
COMMANDS.update({"build": cmd_build, "history": cmd_history, "tag": cmd_tag, "rmi": cmd_rmi,  # step 04b
                 "save": cmd_save, "load": cmd_load, "image": cmd_image})
COMMANDS.update({"rm": cmd_rm, "diff": cmd_diff, "commit": cmd_commit, "info": cmd_info,   # step 04
                 "volume": cmd_volume})
COMMANDS.update({"login": cmd_login, "logout": cmd_logout, "pull": cmd_pull, "push": cmd_push})  # 04b


PARSER = None          # the labtool daemon builds the parser once, before it forks workers


def main(argv=None):
    try:
        a, extra = (PARSER or _parser()).parse_known_args(argv)
        if extra:             # argparse would blame 'labtool'; name the command whose help lists the flags
            where = " ".join(w for w in ("labtool", a.command, getattr(a, "action", None)) if isinstance(w, str))
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{where} --help')")
        if not a.command:
            _parser().print_help()
            return 0
        return COMMANDS[a.command](a)
    except LabtoolError as e:
        print(f"labtool: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:      # a system call failed: say which, without a traceback
        print(f"labtool: {e}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
