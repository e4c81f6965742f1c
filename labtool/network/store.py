"""The network store: one JSON file per network under ``<labtool root>/networks/``.

    networks/<id>.json    the network as ``labtool network inspect`` shows it: Name, Id,
                          Driver, IPAM.Config (Subnet, Gateway, IPRange), Options, and
                          "Containers": the endpoints of the containers running on it
                          (address, MAC, the host end of their veth, their aliases)

``bridge`` (Docker's default network) is made the first time it is needed; ``host`` and
``none`` are not networks on disk but modes (no bridge, no address). Every change of a
network or an endpoint holds one lock of the root (flock(2), ``paths.locked``); choosing a
subnet holds a lock of the whole machine too, because all labtool roots share the host's
routes, and a subnet is taken once its bridge's route is there.
"""

import json
import os
import time

from labtool import paths
from labtool.errors import LabtoolError, UsageError
from labtool.network import ipam, naming

DEFAULT = "bridge"
MODES = ("host", "none")                  # --network values that are not networks on disk
PREDEFINED = (DEFAULT,) + MODES
HOST_LOCK = "/run/lock/labtool-subnets"   # shared by every labtool root on this machine


def networks_dir():
    return os.path.join(paths.lib_dir(), "networks")


def lock():
    return paths.locked(os.path.join(paths.run_dir(), "locks", "networks"))


def host_lock():
    return paths.locked(HOST_LOCK)


def _path(network_id):
    return os.path.join(networks_dir(), f"{network_id}.json")


def all_networks():
    top = networks_dir()
    if not os.path.isdir(top):
        return []
    found = []
    for name in sorted(os.listdir(top)):
        if name.endswith(".json"):
            record = _read(os.path.join(top, name))
            if record:
                found.append(record)
    return sorted(found, key=lambda n: n["Created"])


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save(network):
    os.makedirs(networks_dir(), exist_ok=True)
    path = _path(network["Id"])
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(network, f, indent=1)
    os.replace(tmp, path)


def find(name_or_id, make_default=True):
    """The network with this name, id or unique id prefix (``bridge`` is made when missing)."""
    records = all_networks()
    for n in records:
        if name_or_id in (n["Name"], n["Id"]):
            return n
    matches = [n for n in records if name_or_id and n["Id"].startswith(name_or_id)]
    if len(matches) == 1:
        return matches[0]
    if name_or_id == DEFAULT and make_default:
        return default_network()
    raise UsageError(f"network {name_or_id} not found")


def subnet_of(network):
    import ipaddress

    return ipaddress.ip_network(network["IPAM"]["Config"][0]["Subnet"])


def icc(network):
    """Inter-container communication on this network (``-o icc=false`` switches it off)."""
    options = network.get("Options", {})
    value = options.get("com.docker.network.bridge.enable_icc", options.get("icc", "true"))
    return str(value).lower() not in ("false", "0", "no")


def taken_subnets(except_id=None):
    """[(network, what)] that a new subnet must not overlap: labtool's networks and host routes."""
    from labtool.network import bridge

    ours = {n["Options"]["com.docker.network.bridge.name"] for n in all_networks()}
    taken = [(subnet_of(n), f"network {n['Name']}") for n in all_networks() if n["Id"] != except_id]
    for net, dev in bridge.host_routes():
        if dev not in ours:
            taken.append((net, f"the host's route to {net}" + (f" (dev {dev})" if dev else "")))
    return taken


def _daemon_settings():
    """``<root>/lib/daemon.json``, like /etc/docker/daemon.json: {"icc": false, "bip": "..."}
    for the default bridge, read when it is made."""
    return _read(os.path.join(paths.lib_dir(), "daemon.json")) or {}


def default_network():
    """Docker's ``bridge`` network: made (bridge and subnet) the first time it is needed."""
    with host_lock(), lock():
        for n in all_networks():
            if n["Name"] == DEFAULT:
                return n
        settings = _daemon_settings()
        options = {"com.docker.network.bridge.default_bridge": "true"}
        if settings.get("icc") is False:
            options["com.docker.network.bridge.enable_icc"] = "false"
        return _make(DEFAULT, naming.default_bridge(), subnet=settings.get("bip") or "", options=options,
                     default=True)


def create(name, driver="bridge", subnet="", gateway="", ip_range="", options=None):
    """``labtool network create``: check everything first; then the bridge, then the record."""
    if driver != "bridge":
        raise UsageError(f'plugin "{driver}" not found: labtool has the bridge driver only')
    if not name or name in PREDEFINED:
        raise UsageError(f"{name} is a pre-defined network and cannot be created")
    _check_name(name)
    options = dict(options or {})
    for key, value in options.items():
        if key in ("icc", "com.docker.network.bridge.enable_icc") and value.lower() not in ("true", "false"):
            raise UsageError(f"invalid value for -o {key}: {value} (true or false)")
    with host_lock(), lock():
        if any(n["Name"] == name for n in all_networks()):
            raise UsageError(f"network with name {name} already exists")
        network_id = os.urandom(32).hex()
        return _make(name, naming.bridge_for(network_id), subnet, gateway, ip_range, options, network_id)


def _check_name(name):
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise UsageError(f"invalid network name {name!r}: letters, digits, '_', '.' and '-' only")


def _make(name, ifname, subnet="", gateway="", ip_range="", options=None, network_id=None, default=False):
    """Under both locks: choose or check the subnet, make the bridge, write the record."""
    from labtool.network import bridge

    taken = taken_subnets()
    if subnet:
        net = ipam.parse_subnet(subnet)
        clash = ipam.overlap(net, taken)
        if clash:
            raise UsageError(f"subnet {net} overlaps {clash[1]} ({clash[0]}): choose another --subnet")
    else:
        net = ipam.choose_subnet(taken, for_default_bridge=default)
    gw = ipam.parse_address(gateway, "--gateway") if gateway else ipam.first_host(net)
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise UsageError(f"no matching subnet for gateway {gw}: it must be a host address in {net}")
    pool = None
    if ip_range:
        pool = ipam.parse_subnet(ip_range)
        if not pool.subnet_of(net):
            raise UsageError(f"no matching subnet for range {ip_range}: it must lie in {net}")
    options = dict(options or {})
    options["com.docker.network.bridge.name"] = ifname
    if "icc" in options:
        options["com.docker.network.bridge.enable_icc"] = options.pop("icc").lower()
    network = {
        "Name": name, "Id": network_id or os.urandom(32).hex(), "Created": time.time(),
        "Scope": "local", "Driver": "bridge", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {},
                 "Config": [{"Subnet": str(net), "Gateway": str(gw)} | ({"IPRange": str(pool)} if pool else {})]},
        "Internal": False, "Attachable": False, "Ingress": False,
        "Containers": {}, "Options": options, "Labels": {},
    }
    from labtool.network import firewall

    naming.record_root()
    bridge.make_bridge(ifname, str(gw), net.prefixlen)
    try:
        firewall.network_made(network, net, icc(network))
        save(network)
    except BaseException:
        firewall.network_removed(network)
        bridge.remove_link(ifname)
        raise
    return network


def ensure_bridge(network):
    """Make a network's bridge again if it is gone (a reboot, a ``reset`` of another root),
    as dockerd re-makes docker0 when it starts."""
    from labtool.network import bridge

    ifname = network["Options"]["com.docker.network.bridge.name"]
    if bridge.exists(ifname):
        return
    with host_lock():
        if not bridge.exists(ifname):
            from labtool.network import firewall

            config = network["IPAM"]["Config"][0]
            naming.record_root()
            bridge.make_bridge(ifname, config["Gateway"], subnet_of(network).prefixlen)
            firewall.network_made(network, subnet_of(network), icc(network))


def _drop_stale(network):
    """Forget the endpoints of containers that are gone (removed by hand) or dead (their
    supervisor was killed): their addresses are free again, their veth ends go."""
    from labtool.engine import containers
    from labtool.network import bridge

    stale = [cid for cid in network["Containers"] if not os.path.isdir(paths.container_dir(cid))
             or containers.load(cid).status == "dead"]
    for cid in stale:
        from labtool.network import dns

        dns.detach(cid)
        bridge.remove_link(network["Containers"].pop(cid)["Veth"])
    if stale:
        save(network)
    return network


def remove(name_or_id):
    """``labtool network rm``: only a network no running container is on."""
    from labtool.network import bridge

    if name_or_id in PREDEFINED:
        raise UsageError(f"{name_or_id} is a pre-defined network and cannot be removed")
    with lock():
        network = _drop_stale(find(name_or_id, make_default=False))
        if network["Containers"]:
            names = ", ".join(e.get("Name", cid[:12]) for cid, e in network["Containers"].items())
            raise LabtoolError(f"error while removing network: network {network['Name']} id {network['Id']} "
                               f"has active endpoints ({names})")
        _forget(network, bridge)
    return network


def remove_default():
    """Take the default bridge down when no container is on it (the end of a test run; Docker
    keeps docker0 for good). False when containers still use it."""
    from labtool.network import bridge

    with lock():
        for network in all_networks():
            if network["Name"] == DEFAULT:
                if _drop_stale(network)["Containers"]:
                    return False
                _forget(network, bridge)
        if not all_networks():
            naming.forget_root()         # this root has no bridge left on the host
    return True


def _forget(network, bridge):
    from labtool.network import firewall

    firewall.network_removed(network)
    bridge.remove_link(network["Options"]["com.docker.network.bridge.name"])
    try:
        os.unlink(_path(network["Id"]))
    except FileNotFoundError:
        pass


def prune():
    """``labtool network prune``: every user-defined network no container uses (running or not)."""
    from labtool.engine import containers
    from labtool.network import bridge

    wanted = set()
    for record in containers.all_records():
        for entry in attachments(record.id, record.config):
            wanted.add(entry["Network"])
    removed = []
    with lock():
        for network in all_networks():
            if network["Name"] == DEFAULT or _drop_stale(network)["Containers"]:
                continue
            if network["Name"] in wanted or network["Id"] in wanted:
                continue
            _forget(network, bridge)
            removed.append(network["Name"])
    return removed


# --- a container's attachments: which networks it is on (also while it is stopped) ---------

def attachments_path(container_id):
    return os.path.join(paths.container_dir(container_id), "networks.json")


def attachments(container_id, config):
    """[{"Network": name, "Aliases": [...]}] of a container: its --network (with
    --network-alias), then what ``network connect`` added, less what ``disconnect`` removed."""
    try:
        with open(attachments_path(container_id)) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    mode = config.get("namespaces", {}).get("net", DEFAULT)
    if mode in MODES or mode.startswith("container:"):
        return []
    return [{"Network": mode, "Aliases": list(config.get("network", {}).get("aliases", []))}]


def save_attachments(container_id, entries):
    path = attachments_path(container_id)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(entries, f, indent=1)
    os.replace(tmp, path)


# --- endpoints: a running container's place on a network ------------------------------------

def allocate(network_name, container_id, name, aliases):
    """Give a container an address on a network (under the lock); return (network, endpoint)."""
    with lock():
        network = _drop_stale(find(network_name, make_default=False))
        if container_id in network["Containers"]:
            raise LabtoolError(f"endpoint with name {name} already exists in network {network['Name']}")
        config = network["IPAM"]["Config"][0]
        import ipaddress

        subnet = ipaddress.ip_network(config["Subnet"])
        ip_range = ipaddress.ip_network(config["IPRange"]) if config.get("IPRange") else None
        taken = {e["IPv4Address"].split("/")[0] for e in network["Containers"].values()}
        address = ipam.pick_address(subnet, ip_range, ipaddress.IPv4Address(config["Gateway"]), taken)
        endpoint = {"Name": name, "EndpointID": os.urandom(32).hex(), "MacAddress": ipam.mac_for(address),
                    "IPv4Address": f"{address}/{subnet.prefixlen}", "IPv6Address": "",
                    "Aliases": list(aliases), "Veth": naming.veth_for(container_id, network["Id"]),
                    "Interface": ""}
        network["Containers"][container_id] = endpoint
        save(network)
        return network, endpoint


def update_endpoint(network_id, container_id, **changes):
    with lock():
        network = _read(_path(network_id))
        if network and container_id in network["Containers"]:
            network["Containers"][container_id].update(changes)
            save(network)


def release(network_id, container_id):
    """Give the address back; return the endpoint that was there (or None)."""
    with lock():
        network = _read(_path(network_id))
        if not network or container_id not in network["Containers"]:
            return None
        endpoint = network["Containers"].pop(container_id)
        save(network)
        return endpoint


def endpoints_of(container_id):
    """[(network, endpoint)] of a container, in the order it joined them."""
    found = []
    for network in all_networks():
        if container_id in network["Containers"]:
            found.append((network, network["Containers"][container_id]))
    return found


def inspect(network):
    """A network as ``docker network inspect`` shows it (labtool's bookkeeping left out)."""
    shown = json.loads(json.dumps(network))
    shown["Created"] = _timestamp(network["Created"])
    for endpoint in shown["Containers"].values():
        for key in ("Aliases", "Veth", "Interface"):
            endpoint.pop(key, None)
    return shown


def _timestamp(seconds):
    from labtool.engine.containers import _timestamp as docker_time

    return docker_time(seconds)
