"""Published ports: parse ``-p`` / ``-P`` the way Docker does, and print them the way Docker does.

A container on a bridge has its own network stack (``man 7 network_namespaces``): a server
listening on port 80 inside it is not reachable on the host's port 80. *Publishing* a port
asks the host to forward one of its own ports to the container (``publish.py`` does that with
iptables DNAT). This module is only the bookkeeping around it, pure Python:

    -p 8080:80                 host port 8080 on every host address -> container port 80/tcp
    -p 127.0.0.1:8080:80       only on 127.0.0.1
    -p 127.0.0.1::80           on 127.0.0.1, a random free host port
    -p 80                      every address, a random free host port
    -p 53:53/udp               UDP instead of TCP (the default protocol)
    -p 8000-8001:80-81         ranges, pairwise: 8000->80, 8001->81
    -p 9000-9010:80            one host port out of 9000..9010, whichever is free
    -P                         every port the image EXPOSEs, each to a random host port

Random host ports come from the kernel's ephemeral range (``/proc/sys/net/ipv4/
ip_local_port_range``, see ``man 7 ip``), and a port counts as free when ``bind(2)`` on it
succeeds (``man 2 bind``): that is how a learner can check it too.

API
---
``PortBinding(container_port, protocol="tcp", host_ip="", host_port=0, host_range=None)``
    one published port; ``host_port`` 0 until a free port is chosen; ``host_ip`` "" = all
    addresses (shown as 0.0.0.0). ``.key`` = "80/tcp"; ``.to_state()`` / ``PortBinding.from_state(d)``
    convert to and from the ``{"HostIp", "HostPort", "ContainerPort", "Protocol"}`` dicts that
    ``state.json`` keeps under "Ports" (and that ``engine/ps.py`` reads).
``parse(spec) -> [PortBinding]``      one ``-p`` value; ``UsageError`` with Docker's message if bad
``parse_all(specs) -> [PortBinding]`` every ``-p`` value of a command line
``parse_exposed(text) -> (port, proto)`` "80", "80/tcp", "53/udp" (an EXPOSE entry)
``expand_exposed(text) -> ["80/tcp", ...]`` an EXPOSE or ``--expose`` value, a range "8000-8001" one key per port
``publish_all(exposed) -> [PortBinding]``  ``-P``: each EXPOSEd port to a random host port
``ephemeral_range() -> (low, high)``
``is_free(port, protocol="tcp", host_ip="") -> bool``  a bind(2) test
``random_free_port(protocol="tcp", host_ip="", taken=(), candidates=None) -> int``
``format_ps(bindings, exposed=()) -> str``   the PORTS column: "0.0.0.0:8080->80/tcp, 443/tcp"
``format_port(bindings) -> [str]``          ``labtool port C``: "80/tcp -> 0.0.0.0:8080"
``lookup(bindings, private, container) -> [str]``  ``labtool port C 80``: "0.0.0.0:8080", or
    ``LabtoolError("No public port '80/tcp' published for C")``
"""

import ipaddress
import random
import socket
from dataclasses import dataclass

from labtool.errors import LabtoolError, UsageError

PROTOCOLS = ("tcp", "udp")


@dataclass
class PortBinding:
    """One published port: host ``host_ip:host_port`` -> container ``container_port/protocol``."""

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""                # "" = every host address (0.0.0.0)
    host_port: int = 0               # 0 = not chosen yet: a random free one
    host_range: tuple = None         # (low, high) to choose host_port from (-p 9000-9010:80)

    @property
    def key(self):
        """Docker's name for the container side: ``80/tcp``."""
        return f"{self.container_port}/{self.protocol}"

    @property
    def shown_ip(self):
        return self.host_ip or "0.0.0.0"

    def to_state(self):
        return {"HostIp": self.shown_ip, "HostPort": self.host_port,
                "ContainerPort": self.container_port, "Protocol": self.protocol}

    @classmethod
    def from_state(cls, d):
        ip = d.get("HostIp", "")
        return cls(int(d["ContainerPort"]), d.get("Protocol", "tcp"), "" if ip == "0.0.0.0" else ip,
                   int(d.get("HostPort", 0)))


# --- parsing ----------------------------------------------------------------------------------

def _split_parts(raw):
    """``IP:HOST:CTR`` -> (ip, host, ctr); fewer parts leave the first ones empty."""
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _port_range(text):
    """``"80"`` -> (80, 80); ``"8000-8001"`` -> (8000, 8001); ValueError when it is not one."""
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(text)
    low, high = int(low), int(high) if sep else int(low)
    if not (0 < low <= 65535 and 0 < high <= 65535) or high < low:
        raise ValueError(text)
    return low, high


def parse(spec):
    """Parse one ``-p`` value into bindings (several for a range). Docker's messages on error."""
    ip, host, container = _split_parts(spec)
    container, _, proto = container.partition("/")
    proto = proto or "tcp"
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"invalid IP address: {ip}") from None
        if address.version != 4:
            raise UsageError(f"invalid IP address: {ip} (labtool publishes IPv4 only)")
        ip = "" if ip == "0.0.0.0" else str(address)
    if not container:
        raise UsageError(f"no port specified: {spec}<empty>")
    try:
        c_low, c_high = _port_range(container)
    except ValueError:
        raise UsageError(f"invalid containerPort: {container}") from None
    h_low = h_high = 0
    if host:
        try:
            h_low, h_high = _port_range(host)
        except ValueError:
            raise UsageError(f"invalid hostPort: {host}") from None
    if host and (c_high - c_low) != (h_high - h_low) and c_high != c_low:
        raise UsageError(f"invalid ranges specified for container and host Ports: {container} and {host}")
    if proto.lower() not in PROTOCOLS:
        raise UsageError(f"invalid proto: {proto}")
    proto = proto.lower()
    if host and c_low == c_high and h_low != h_high:
        # one container port, a host range: any free host port of that range will do
        return [PortBinding(c_low, proto, ip, 0, (h_low, h_high))]
    return [PortBinding(c_low + i, proto, ip, (h_low + i) if host else 0)
            for i in range(c_high - c_low + 1)]


def parse_all(specs):
    """Every ``-p`` of a command line; the same host port twice is Docker's error too."""
    found = []
    for spec in specs:
        found.extend(parse(spec))
    seen = set()
    for b in found:
        if b.host_port:
            if (b.host_ip, b.host_port, b.protocol) in seen or ("", b.host_port, b.protocol) in seen:
                raise UsageError(f"Bind for {b.shown_ip}:{b.host_port} failed: port is already allocated")
            seen.add((b.host_ip, b.host_port, b.protocol))
    return found


def parse_exposed(text):
    """An EXPOSE entry (``80``, ``80/tcp``, ``53/udp``) -> (80, "tcp")."""
    port, _, proto = str(text).partition("/")
    proto = (proto or "tcp").lower()
    if not port.isdigit() or not 0 < int(port) <= 65535 or proto not in PROTOCOLS:
        raise UsageError(f"invalid exposed port: {text}")
    return int(port), proto


def expand_exposed(text):
    """An EXPOSE / ``--expose`` value -> its keys: "8000-8001/udp" -> ["8000/udp", "8001/udp"] (as Docker stores it)."""
    port, _, proto = str(text).partition("/")
    proto = (proto or "tcp").lower()
    try:
        low, high = _port_range(port)
    except ValueError:
        raise UsageError(f"invalid exposed port: {text}") from None
    if proto not in PROTOCOLS:
        raise UsageError(f"invalid exposed port: {text} (labtool knows tcp and udp)")
    return [f"{n}/{proto}" for n in range(low, high + 1)]


def publish_all(exposed):
    """``-P``: every EXPOSEd port (``["80/tcp", "53/udp"]``) to a random host port, all addresses."""
    return [PortBinding(port, proto) for port, proto in sorted({parse_exposed(e) for e in exposed})]


# --- free host ports ---------------------------------------------------------------------------

def ephemeral_range():
    """The kernel's range for automatic ports (``man 7 ip``: ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def is_free(port, protocol="tcp", host_ip=""):
    """True if a socket can ``bind(2)`` to ``host_ip:port`` right now (nobody else holds it)."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError:
            return False
    return True


def random_free_port(protocol="tcp", host_ip="", taken=(), candidates=None):
    """A free host port: from ``candidates`` (a range) or the ephemeral range, not in ``taken``."""
    if candidates is None:
        low, high = ephemeral_range()
        candidates = range(low, high + 1)
    order = list(candidates)
    random.shuffle(order)
    for port in order:
        if port not in taken and is_free(port, protocol, host_ip):
            return port
    first, last = min(candidates), max(candidates)
    raise LabtoolError(f"Bind for {host_ip or '0.0.0.0'}:{first}-{last} failed: port is already allocated")


# --- printing ----------------------------------------------------------------------------------

def _runs(items):
    """Group sorted (host_ip, host_port, container_port, proto) into consecutive runs, as Docker's
    ps does: 8000->80 and 8001->81 print as ``8000-8001->80-81``."""
    runs = []
    for item in items:
        if runs:
            ip, h1, h2, c1, c2, proto = runs[-1]
            if (item[0], item[3]) == (ip, proto) and item[2] == c2 + 1 and (h2 == 0) == (item[1] == 0) \
                    and (h2 == 0 or item[1] == h2 + 1):
                runs[-1] = (ip, h1, item[1], c1, item[2], proto)
                continue
        runs.append((item[0], item[1], item[1], item[2], item[2], item[3]))
    return runs


def _span(a, b):
    return f"{a}" if a == b else f"{a}-{b}"


def format_ps(bindings, exposed=()):
    """The PORTS column of ``ps``: published ``0.0.0.0:8080->80/tcp``, then exposed-only ``443/tcp``."""
    published = sorted((b.shown_ip, b.host_port, b.container_port, b.protocol) for b in bindings)
    keys = {b.key for b in bindings}
    only_exposed = sorted({("", 0, p, proto) for p, proto in map(parse_exposed, exposed)
                           if f"{p}/{proto}" not in keys})
    out = [f"{ip}:{_span(h1, h2)}->{_span(c1, c2)}/{proto}" for ip, h1, h2, c1, c2, proto in _runs(published)]
    out += [f"{_span(c1, c2)}/{proto}" for _, _, _, c1, c2, proto in _runs(only_exposed)]
    return ", ".join(out)


def format_port(bindings):
    """``labtool port CONTAINER``: one line per binding, ``80/tcp -> 0.0.0.0:8080``."""
    order = sorted(bindings, key=lambda b: (b.container_port, b.protocol, b.shown_ip, b.host_port))
    return [f"{b.key} -> {b.shown_ip}:{b.host_port}" for b in order]


def lookup(bindings, private, container):
    """``labtool port CONTAINER 80[/tcp]``: the host addresses of that container port."""
    port, proto = parse_exposed(private)
    found = [f"{b.shown_ip}:{b.host_port}" for b in bindings if (b.container_port, b.protocol) == (port, proto)]
    if not found:
        raise LabtoolError(f"No public port '{port}/{proto}' published for {container}")
    return found
