"""Step 05: networking. A container gets a network of its own, plugged into a bridge.

Docker's network modes (the slides' "Docker Networking"), as ``--network`` / ``--net`` picks them:

    none             Closed: its own network namespace with only ``lo`` (step 02 made it)
    bridge           Bridged (the default): a veth pair from the namespace to the host's
                     default bridge (``lt0``, Docker's ``docker0``), an address of its subnet,
                     a default route via the bridge; ``-p`` publishes ports on the host
    NETWORK          the same on a user-defined network (``labtool network create``), where
                     containers find each other by name (an embedded DNS server, 127.0.0.11)
    container:NAME   Joined: the network namespace of another container (step 02 joins it)
    host             Open: the host's own network stack, no isolation at all

The modules of this package:

    naming.py   names of host objects per labtool root (lt0, lt-<id>, ltv-<hash>)
    store.py    networks on disk, endpoints, ``network create/rm/prune``
    ipam.py     subnets and addresses: which ones are free
    bridge.py   bridges and veth pairs (netlink, pyroute2)
    etc.py      /etc/hosts and /etc/resolv.conf
    ports.py    -p / -P parsing and printing       publish.py  iptables: DNAT, icc, links
    links.py    --link's variables and hosts lines  dns.py      the embedded DNS server
    names.py    who is who, for the DNS server      firewall.py what the step asks of publish.py

The step's shape (runtime.py): ``prepare`` (host, before the child) takes addresses and writes
/etc/hosts; ``started`` (host, once the child's namespace exists) plugs the veth pairs in and
publishes ports; ``teardown`` undoes it all. ``connect`` / ``disconnect`` do the same for a
running container, live.
"""

import os
import sys
from dataclasses import dataclass, field

from labtool import explain, paths
from labtool.errors import LabtoolError, UsageError


@dataclass
class Plan:
    """What the network step will do for one container (decided by ``plan``, before anything is made)."""

    mode: str                          # none, host, container:NAME, or a network's name
    bindings: list = field(default_factory=list)    # ports.PortBinding, as asked (-p, -P)
    exposed: list = field(default_factory=list)     # "80/tcp": the image's EXPOSE and --expose
    links: list = field(default_factory=list)       # links.Link
    add_hosts: list = field(default_factory=list)   # (name, ip)
    dns: list = field(default_factory=list)
    # filled in by prepare / started:
    endpoints: list = field(default_factory=list)   # (network, endpoint) while it runs
    env: list = field(default_factory=list)         # the link variables ("KEY=VALUE")
    published: list = field(default_factory=list)   # ports.PortBinding with their host ports


def check_flags(spec):
    """Without step 05 the network flags have nothing to act on: say so."""
    n = spec.network
    if n.publish or n.publish_all or n.links or n.aliases or n.dns or n.add_hosts or n.expose:
        raise UsageError(f"-p, -P, --expose, --link, --network-alias, --dns and --add-host come with step 05 "
                         f"(network): --upto {spec.upto} stops before it")


def plan(spec, image):
    """Check the network flags of a spec; return the step's Plan. Nothing is made yet."""
    mode = spec.namespaces.net
    n = spec.network
    if mode.startswith("container:"):       # the other container's stack, /etc/hosts and resolv.conf: Docker's errors
        for given, what in ((spec.hostname, "hostname"), (n.dns, "dns"),
                            (n.add_hosts, "custom host-to-IP mapping")):
            if given:
                raise UsageError(f"conflicting options: {what} and the network mode (--network {mode})")
    image_ports = set(image.config.get("config", {}).get("ExposedPorts", {}) or {})
    if not _on_networks(mode) and not (n.publish or n.publish_all or n.links or n.aliases or n.dns
                                       or n.add_hosts or n.expose):
        return Plan(mode=mode, exposed=sorted(image_ports))   # nothing to check (and nothing to import)
    from labtool.network import links, ports, store

    exposed = sorted(image_ports | {key for e in n.expose for key in ports.expand_exposed(e)})
    p = Plan(mode=mode, exposed=exposed)
    p.bindings = ports.parse_all(n.publish)
    # a published port is an exposed one too (Docker adds -p's ports to ExposedPorts): links announce it
    # in their env and open it under icc=false
    p.exposed = sorted(set(exposed) | {b.key for b in p.bindings})
    if n.publish_all:
        asked = {b.key for b in p.bindings}
        p.bindings += [b for b in ports.publish_all(exposed) if b.key not in asked]
    p.add_hosts = [_parse_add_host(h) for h in n.add_hosts]
    p.dns = [_parse_dns(d) for d in n.dns]
    p.links = [links.parse_link(text) for text in n.links]
    if mode in ("host", "none") or mode.startswith("container:"):
        if p.bindings:
            what = "host network mode" if mode == "host" else f"--network {mode}"
            print(f"WARNING: Published ports are discarded when using {what}", file=sys.stderr)
            p.bindings = []
        if n.aliases:
            raise UsageError("network-scoped aliases are only supported for user-defined networks")
        if p.links and mode != "none":
            raise UsageError(f"conflicting options: --link and --network {mode}")
        return p
    if n.aliases and mode == store.DEFAULT:
        raise UsageError("network-scoped aliases are only supported for user-defined networks")
    if mode != store.DEFAULT:
        store.find(mode, make_default=False)            # "network NAME not found" before anything is made
    for link in p.links:
        _link_target(link)
    return p


def _parse_add_host(text):
    from labtool.network import etc

    return etc.parse_add_host(text)


def _parse_dns(text):
    from labtool.network import etc

    return etc.parse_dns(text)


def _link_target(link):
    """The running container a --link points to (Docker: it must be running)."""
    from labtool.engine import containers

    try:
        record, _ = containers.find_running(link.name)
    except LabtoolError:
        raise UsageError(f"could not get container for {link.name}: it must exist and run "
                         f"(--link NAME[:ALIAS])") from None
    return record


# --- the step, as runtime.py calls it ----------------------------------------------------

def prepare(c):
    """Host side, before the child: take an address on each network, choose host ports,
    write /etc/hosts and /etc/resolv.conf. Undoes its own work if anything fails."""
    p = c.network
    p.endpoints, p.env, p.published = [], [], []
    try:
        if _on_networks(p.mode):
            _take_addresses(c)
            p.env = _link_env(c)
        _write_etc(c)
    except BaseException:
        _give_back(c.id)
        raise


def started(c, pid):
    """Host side, once the child's network namespace exists (it waits for us): plug it in."""
    p = c.network
    if not p.endpoints:
        return
    from labtool.network import bridge, firewall

    for n, (network, endpoint) in enumerate(p.endpoints):
        ifname = f"eth{n}"
        address, prefixlen = endpoint["IPv4Address"].split("/")
        bridge.plug(pid, network["Options"]["com.docker.network.bridge.name"], endpoint["Veth"], ifname,
                    address, int(prefixlen), network["IPAM"]["Config"][0]["Gateway"], endpoint["MacAddress"],
                    default_route=(n == 0))
        _update_endpoint(network, c.id, Interface=ifname)
    from labtool.engine import containers

    links = _link_records(c)
    # written down first: teardown (or rm after a crash) then knows there are rules to remove
    containers.update_state(c.id, FirewallRules=bool(p.bindings or links))
    p.published = firewall.container_started(c.id, p.endpoints, p.bindings, links)
    _attach_dns(c.id, pid, p.endpoints, p.dns)
    containers.update_state(c.id, Ports=[b.to_state() for b in p.published], Exposed=p.exposed)


def teardown(c):
    """Host side, after the child is gone: unplug, unpublish, give the addresses back."""
    if not _on_networks(c.spec.namespaces.net):
        return                       # none, host, container:NAME: nothing was taken, nothing to give back
    _give_back(c.id)                 # (by the container's id: a supervisor may hold only a sketch of it)
    if c.network:
        c.network.endpoints = []


def cleanup(container_id):
    """What a killed supervisor could not undo (``rm`` of a dead container, ``reset``)."""
    _give_back(container_id)


def _give_back(container_id):
    from labtool.engine import containers
    from labtool.network import bridge, firewall, store

    _detach_dns(container_id)        # first and always: its sockets would keep the namespace alive
    found = store.endpoints_of(container_id)
    state = containers.load(container_id).state
    if not found and not state.get("Ports") and not state.get("FirewallRules"):
        return
    if state.get("FirewallRules") or state.get("Ports"):
        firewall.container_stopped(container_id)
    for network, endpoint in found:
        explain.say("network", f"netlink: ip link del {endpoint['Veth']}", "the veth pair goes (both ends)")
        bridge.remove_link(endpoint["Veth"])
        store.release(network["Id"], container_id)
    containers.update_state(container_id, Ports=[], FirewallRules=False)


def _on_networks(mode):
    return mode not in ("host", "none") and not mode.startswith("container:")


def _take_addresses(c):
    from labtool.engine import containers
    from labtool.network import store

    config = containers.read_json(os.path.join(c.dir, "config.json")) or {"namespaces": {"net": c.network.mode}}
    for entry in store.attachments(c.id, config):
        network = store.find(entry["Network"])           # makes the default bridge the first time
        store.ensure_bridge(network)
        network, endpoint = store.allocate(network["Id"], c.id, c.spec.name or c.id[:12], entry.get("Aliases", []))
        explain.say("network", f"ipam: {endpoint['IPv4Address']} on {network['Name']} "
                    f"({network['IPAM']['Config'][0]['Subnet']})", "the lowest address nobody holds")
        c.network.endpoints.append((network, endpoint))


def _link_records(c):
    """[(link, target record, target ip)] for --link, on the default bridge."""
    from labtool.network import store

    found = []
    for link in c.network.links:
        record = _link_target(link)
        ips = [e["IPv4Address"].split("/")[0] for _, e in store.endpoints_of(record.id)]
        found.append((link, record, ips[0] if ips else ""))
    return found


def _link_env(c):
    """The variables --link sets (default bridge only: user-defined networks share no env)."""
    from labtool.network import links, store

    if c.network.mode != store.DEFAULT:
        return []
    env = []
    for link, record, ip in _link_records(c):
        exposed = record.state.get("Exposed", [])
        env += links.link_env(link.alias, c.spec.name or c.id[:12], ip, exposed,
                              record.config.get("process", {}).get("env", []))
    return env


def _write_etc(c):
    """/etc/hosts and /etc/resolv.conf in the container's directory (step 01 binds them)."""
    from labtool.engine import containers
    from labtool.network import etc

    p = c.network
    if p.mode == "none":                                  # Closed: localhost and its own name
        extra = [(name, "127.0.0.1" if ip == "host-gateway" else ip) for name, ip in p.add_hosts]
        etc.write_in_place(os.path.join(c.dir, "hosts"), etc.hosts_text(c.hostname, [], extra, []))
        etc.write_in_place(os.path.join(c.dir, "resolv.conf"), etc.resolv_text(False, p.dns))
        return
    from labtool.network import links, store

    if p.mode.startswith("container:"):                  # Joined: the other container's files
        record = containers.find(p.mode.split(":", 1)[1])
        for name in ("hosts", "resolv.conf"):
            source = os.path.join(os.path.dirname(c.dir), record.id, name)
            if os.path.exists(source):
                with open(source) as f:
                    etc.write_in_place(os.path.join(c.dir, name), f.read())
        return
    if p.mode == "host":
        with open("/etc/hosts") as f:
            etc.write_in_place(os.path.join(c.dir, "hosts"), f.read())
        etc.write_in_place(os.path.join(c.dir, "resolv.conf"), etc.resolv_text(False, p.dns))
        return
    addresses = [e["IPv4Address"].split("/")[0] for _, e in p.endpoints]
    gateway = p.endpoints[0][0]["IPAM"]["Config"][0]["Gateway"] if p.endpoints else "127.0.0.1"
    extra = [(name, gateway if ip == "host-gateway" else ip) for name, ip in p.add_hosts]
    link_lines = []
    if p.mode == store.DEFAULT:
        link_lines = [links.hosts_line(link.alias, ip, record.config.get("hostname") or record.id[:12],
                                       record.name) for link, record, ip in _link_records(c)]
    etc.write_in_place(os.path.join(c.dir, "hosts"), etc.hosts_text(c.hostname, addresses[:1], extra, link_lines))
    embedded = any(network["Name"] != store.DEFAULT for network, _ in p.endpoints)
    etc.write_in_place(os.path.join(c.dir, "resolv.conf"), etc.resolv_text(embedded, p.dns))


def _update_endpoint(network, container_id, **changes):
    from labtool.network import store

    store.update_endpoint(network["Id"], container_id, **changes)


def _attach_dns(container_id, pid, endpoints, servers=()):
    """The embedded DNS server answers in this container if it is on a user-defined network."""
    from labtool.network import dns, store

    if not any(network["Name"] != store.DEFAULT for network, _ in endpoints):
        return
    explain.say("network", f"dns: a socket on {dns.EMBEDDED_IP}:53 made in the container's namespace, "
                f"read by labtool's resolver", "names of the containers on its networks")
    dns.attach(container_id, f"/proc/{pid}/ns/net", [(s, 53) for s in servers] or None)


def _detach_dns(container_id):
    from labtool.network import dns

    dns.detach(container_id)


# --- live changes: network connect / disconnect -------------------------------------------

def connect(network_name, container, aliases=()):
    """``labtool network connect [--alias A] NETWORK CONTAINER``: now, if it runs; at its next start anyway."""
    from labtool.engine import containers
    from labtool.network import bridge, firewall, store

    record = containers.find(container)
    network = store.find(network_name)
    mode = record.config.get("namespaces", {}).get("net", store.DEFAULT)
    if not _on_networks(mode):
        raise LabtoolError(f"container {record.name or record.id[:12]} uses --network {mode}: "
                           f"it cannot be connected to a network")
    if aliases and network["Name"] == store.DEFAULT:
        raise UsageError("network-scoped aliases are only supported for user-defined networks")
    entries = store.attachments(record.id, record.config)
    if any(store.find(e["Network"])["Id"] == network["Id"] for e in entries):
        raise LabtoolError(f"endpoint with name {record.name} already exists in network {network['Name']}")
    pid = record.running_pid
    if pid:
        store.ensure_bridge(network)
        network, endpoint = store.allocate(network["Id"], record.id, record.name, list(aliases))
        try:
            ifname = bridge.free_ifname(pid)
            address, prefixlen = endpoint["IPv4Address"].split("/")
            bridge.plug(pid, network["Options"]["com.docker.network.bridge.name"], endpoint["Veth"], ifname,
                        address, int(prefixlen), network["IPAM"]["Config"][0]["Gateway"], endpoint["MacAddress"],
                        default_route=not bridge.has_default_route(pid))
            _update_endpoint(network, record.id, Interface=ifname)
            firewall.container_connected(record.id, network, endpoint)
        except BaseException:
            bridge.remove_link(endpoint["Veth"])
            store.release(network["Id"], record.id)
            raise
        from labtool.network import dns, etc

        etc.name_own_address(os.path.join(paths.container_dir(record.id), "hosts"), address, _hostname(record))
        if network["Name"] != store.DEFAULT and record.id not in dns.attached():
            servers = record.config.get("network", {}).get("dns", [])
            _attach_dns(record.id, pid, store.endpoints_of(record.id), servers)
            # its first user-defined network: names are asked of the embedded server from now on
            # (rewritten in place: the container's bind mount of the file shows it at once)
            etc.write_in_place(os.path.join(paths.container_dir(record.id), "resolv.conf"),
                               etc.resolv_text(True, servers))
    entries.append({"Network": network["Name"], "Aliases": list(aliases)})
    store.save_attachments(record.id, entries)


def _hostname(record):
    return record.config.get("hostname") or record.id[:12]


def disconnect(network_name, container, force=False):
    """``labtool network disconnect NETWORK CONTAINER``: its veth pair goes, and its address."""
    from labtool.engine import containers
    from labtool.network import bridge, store

    record = containers.find(container)
    network = store.find(network_name)
    entries = store.attachments(record.id, record.config)
    kept = [e for e in entries if store.find(e["Network"])["Id"] != network["Id"]]
    if len(kept) == len(entries) and record.id not in network["Containers"]:
        raise LabtoolError(f"container {record.name or record.id[:12]} is not connected to network "
                           f"{network['Name']}")
    endpoint = network["Containers"].get(record.id)
    if endpoint:                   # (its rules are on its first network: they stay)
        from labtool.network import etc

        explain.say("network", f"netlink: ip link del {endpoint['Veth']}", "unplug it from that bridge")
        bridge.remove_link(endpoint["Veth"])
        store.release(network["Id"], record.id)
        etc.name_own_address(os.path.join(paths.container_dir(record.id), "hosts"),
                             endpoint["IPv4Address"].split("/")[0], _hostname(record), named=False)
    store.save_attachments(record.id, kept)
    if not any(n["Name"] != store.DEFAULT for n, _ in store.endpoints_of(record.id)):
        _detach_dns(record.id)


# --- what inspect, ps and port show ---------------------------------------------------------

def settings(record):
    """``NetworkSettings`` of ``docker inspect``: the primary address, every network, the ports."""
    from labtool.network import ports, store

    found = store.endpoints_of(record.id) if record.running_pid else []
    networks = {}
    for network, endpoint in found:
        address, prefixlen = endpoint["IPv4Address"].split("/")
        networks[network["Name"]] = {
            "Aliases": endpoint.get("Aliases") or None, "NetworkID": network["Id"],
            "EndpointID": endpoint["EndpointID"], "Gateway": network["IPAM"]["Config"][0]["Gateway"],
            "IPAddress": address, "IPPrefixLen": int(prefixlen), "MacAddress": endpoint["MacAddress"]}
    if not found:
        mode = record.config.get("namespaces", {}).get("net", store.DEFAULT)
        for entry in ([] if not _on_networks(mode) else store.attachments(record.id, record.config)):
            networks[entry["Network"]] = {"Aliases": entry.get("Aliases") or None, "NetworkID": "",
                                          "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                                          "MacAddress": ""}
        if not _on_networks(mode) and not mode.startswith("container:"):
            networks[mode] = {"Aliases": None, "NetworkID": "", "EndpointID": "", "Gateway": "",
                              "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}
    bindings = [ports.PortBinding.from_state(d) for d in record.state.get("Ports", [])]
    shown = {key: None for key in record.state.get("Exposed", [])} if record.running_pid else {}
    for b in bindings:
        shown.setdefault(b.key, [])
        shown[b.key] = (shown[b.key] or []) + [{"HostIp": b.shown_ip, "HostPort": str(b.host_port)}]
    first = next(iter(networks.values()), {})
    return {"IPAddress": first.get("IPAddress", ""), "IPPrefixLen": first.get("IPPrefixLen", 0),
            "Gateway": first.get("Gateway", ""), "MacAddress": first.get("MacAddress", ""),
            "Ports": shown, "Networks": networks}


def reset(own_root):
    """``labtool reset``: the networks of this root (their bridges), and the firewall's chains."""
    from labtool.network import bridge, firewall, naming, publish, store

    from labtool.network import dns

    said = ["stopped the DNS resolver"] if dns.stop() else []
    if publish.listed():
        firewall.reset()
        said.append("removed labtool's iptables chains of this root")
    for network in store.all_networks():
        ifname = network["Options"]["com.docker.network.bridge.name"]
        bridge.remove_link(ifname)
        said.append(f"removed network {network['Name']} ({ifname})")
    links = [name for name in bridge.links() if name.startswith("lt") and (not own_root or naming.is_ours(name))]
    for name in links:
        bridge.remove_link(name)
    if links:
        said.append(f"removed links {' '.join(links)}")
    naming.forget_root()
    for tag6, path in naming.orphans().items():
        said += _reset_orphan(tag6, path)
    return said


def _reset_orphan(tag6, path):
    """The bridges, veths and chains of a LABTOOL_ROOT whose directory was deleted without a
    ``labtool reset``: found by the tag in their names (naming.py), and removed."""
    from labtool.network import bridge, naming, publish

    with naming.acting_for(path):
        links = [name for name in bridge.links() if name.startswith("lt") and naming.is_ours(name)]
        for name in links:
            bridge.remove_link(name)
        chains = publish.listed()
        if chains:
            publish.remove_all()
    naming.forget_root(tag6)
    if not links and not chains:
        return []
    return [f"removed the links and chains of {path}, a labtool root that is gone: {' '.join(links)}".strip()]
