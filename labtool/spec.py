"""The container spec: everything ``labtool run`` was asked to do, as plain dataclasses.

The shape follows the OCI runtime spec (``config.json``: ``process``, ``root``,
``hostname``, ``mounts``, ``linux.namespaces``) and Docker's ``HostConfig``, so that a
Docker Engine API or an OCI runtime front end can fill it in later. The CLI turns flags
into a ``ContainerSpec``; ``runtime.run(spec)`` turns it into a running process.
"""

from dataclasses import dataclass, field

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Process:
    """What to execute inside the container (OCI: ``process``)."""

    args: list                       # argv; args[0] is looked up in the container's PATH
    env: list = field(default_factory=lambda: [f"PATH={DEFAULT_PATH}"])  # "KEY=VALUE"
    cwd: str = "/"
    user: str = ""                   # "UID[:GID]" or "NAME[:GROUP]"; empty: root


@dataclass
class Mount:
    """One mount into the container (OCI: ``mounts[]``; Docker: ``HostConfig.Mounts``).

    "bind":   ``source`` is a host path, file or directory (``-v /host:/ctr``)
    "volume": ``source`` is a volume name, "" for a new anonymous one (``-v NAME:/ctr``, ``-v /ctr``)
    "tmpfs":  a filesystem in memory, gone with the container (``--tmpfs /run:size=64m``)
    """

    type: str                        # "bind", "volume" or "tmpfs"
    target: str                      # an absolute path inside the container
    source: str = ""
    read_only: bool = False          # ":ro"
    options: list = field(default_factory=list)   # tmpfs: ["size=64m", "mode=1777", "exec"]


@dataclass
class Namespaces:
    """Where each kind of namespace comes from (Docker's --pid, --ipc, --uts, --userns).

    "private": a new one for this container; "host": the host's, no isolation;
    "container:NAME": join another container's (ipc and pid); "shareable" (ipc):
    private, and other containers may join it.
    """

    pid: str = "private"
    net: str = "bridge"              # --network: none, bridge, host, container:NAME, or a network's name
    uts: str = "private"
    ipc: str = "private"
    user: str = "host"               # "private" (--userns): root inside, uid 100000 outside


@dataclass
class Resources:
    """Limits, with Docker's flags and units (OCI: ``linux.resources``; step 03, cgroups).

    0 means "no limit" everywhere, as in Docker's HostConfig.
    """

    memory: int = 0                  # --memory, bytes
    memory_swap: int = 0             # --memory-swap: memory + swap, bytes; 0: twice --memory; -1: unlimited
    cpu_shares: int = 0              # --cpu-shares: weight against other busy containers (default 1024)
    cpus: float = 0.0                # --cpus: how many CPUs' worth of time, e.g. 0.5
    cpuset_cpus: str = ""            # --cpuset-cpus: which CPUs, e.g. "0" or "0-1"
    pids_limit: int = 0              # --pids-limit: how many processes at most
    devices: list = field(default_factory=list)   # --device HOST[:CONTAINER][:rwm], as given


@dataclass
class Capabilities:
    """What root in the container may still do (step 06; Docker's HostConfig.CapAdd, .CapDrop,
    .SecurityOpt; OCI: ``process.capabilities``, ``process.noNewPrivileges``)."""

    add: list = field(default_factory=list)      # --cap-add, as given: "NET_ADMIN", "cap_sys_time", "ALL"
    drop: list = field(default_factory=list)     # --cap-drop, as given
    no_new_privileges: bool = False              # --security-opt no-new-privileges


@dataclass
class Network:
    """Step 05: how the container meets the network, besides --network itself (Docker's
    NetworkingConfig and HostConfig.PortBindings, .PublishAllPorts, .Links, .Dns, .ExtraHosts)."""

    aliases: list = field(default_factory=list)     # --network-alias: more names on its network
    dns: list = field(default_factory=list)         # --dns: nameservers for /etc/resolv.conf
    add_hosts: list = field(default_factory=list)   # --add-host NAME:IP, lines of /etc/hosts
    links: list = field(default_factory=list)       # --link NAME[:ALIAS] (the default bridge's old way)
    publish: list = field(default_factory=list)     # -p [IP:][HOST:]CTR[/PROTO], as given
    publish_all: bool = False                       # -P: every exposed port, to a random host port
    expose: list = field(default_factory=list)      # --expose PORT[/PROTO]


@dataclass
class ContainerSpec:
    """One container, as asked for on the command line."""

    image: str                       # "busybox" or "busybox:latest"
    process: Process
    id: str = ""                     # 64 hex digits, given by the runtime
    name: str = ""
    hostname: str = ""               # empty: the first 12 digits of the id, as Docker does
    upto: str = "full"               # run only the steps up to this one (see runtime.STEPS)
    explain: bool = False            # narrate each kernel action on stderr
    remove: bool = False             # --rm: delete the container when it exits
    # step 04: mounts (Docker's HostConfig.Mounts, .ReadonlyRootfs, .VolumesFrom)
    mounts: list = field(default_factory=list)         # of Mount, from -v and --tmpfs
    read_only: bool = False                            # --read-only: the root filesystem
    volumes_from: list = field(default_factory=list)   # "CONTAINER[:ro|:rw]"
    namespaces: Namespaces = field(default_factory=Namespaces)
    init: bool = False               # --init: a tiny init as PID 1 runs the command
    resources: Resources = field(default_factory=Resources)
    capabilities: Capabilities = field(default_factory=Capabilities)
    privileged: bool = False         # --privileged (step 07): the protections of steps 01-06 off
    # the lifecycle (notebook 00): Docker's Config.Entrypoint, .Tty, .OpenStdin, HostConfig.RestartPolicy
    entrypoint: list = None          # --entrypoint: replaces the image's; None keeps it, [] clears it
    tty: bool = False                # -t: a pseudo-terminal for the command
    interactive: bool = False        # -i: keep stdin open (the caller's, when attached)
    restart: str = "no"              # --restart no | on-failure[:N] | always | unless-stopped
    network: Network = field(default_factory=Network)   # step 05 (the mode is namespaces.net)


def from_dict(d):
    """A ContainerSpec back from its JSON form (``config.json`` is ``asdict(spec)``)."""
    d = dict(d)
    d["process"] = Process(**d["process"])
    d["namespaces"] = Namespaces(**d.get("namespaces", {}))
    d["resources"] = Resources(**d.get("resources", {}))
    d["capabilities"] = Capabilities(**d.get("capabilities", {}))
    d["mounts"] = [Mount(**m) for m in d.get("mounts", [])]
    d["network"] = Network(**d.get("network", {}))
    return ContainerSpec(**d)
