"""IP address management: which subnet a network gets, which address a container gets.

Docker's rules, kept here in plain Python (``ipaddress``, no kernel work):

- A network has one IPv4 subnet. ``--subnet`` chooses it; otherwise the first free block
  of a pool: 172.17.0.0/16 for the default bridge, then 172.18.0.0/16 ... 172.31.0.0/16,
  then 192.168.0.0/20, 192.168.16.0/20, ... ("free": no other network of labtool and no
  route of the host overlaps it, so the host can still reach its own infrastructure: the
  slide "User-defined network subnet" warns what happens otherwise).
- The gateway is the first address (``--gateway`` may choose another); it lives on the bridge.
- Containers get the lowest free address of ``--ip-range`` (default: the whole subnet),
  never the network's own address, its broadcast address or the gateway, and never one that
  another container holds: ``store.allocate`` decides under a lock, so twenty ``run``s at
  once still get twenty different addresses.
"""

import ipaddress

from labtool.errors import UsageError


def default_pool(for_default_bridge):
    """Candidate subnets in Docker's order."""
    if for_default_bridge:
        yield ipaddress.ip_network("172.17.0.0/16")
    for second in range(18, 32):
        yield ipaddress.ip_network(f"172.{second}.0.0/16")
    for third in range(0, 256, 16):
        yield ipaddress.ip_network(f"192.168.{third}.0/20")
    for second in range(0, 256):
        yield ipaddress.ip_network(f"10.{second}.0.0/16")


# addresses a bridge must not take: the host would route them to the bridge instead of where they belong
SPECIAL = [(ipaddress.ip_network(net), what) for net, what in (
    ("0.0.0.0/8", "'this network' (man 7 ip: INADDR_ANY)"), ("127.0.0.0/8", "loopback (the host's lo)"),
    ("169.254.0.0/16", "link-local"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"))]


def parse_subnet(text):
    """``--subnet 10.10.0.0/24`` -> an IPv4Network; one clear line when it is not one."""
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise UsageError(f"invalid CIDR address: {text}") from None
    if "/" not in text:
        raise UsageError(f"invalid CIDR address: {text} (give a prefix length, e.g. {text}/24)")
    if net.version != 4:
        raise UsageError(f"invalid subnet {text}: labtool's networks are IPv4 only")
    if str(net) != text:
        raise UsageError(f"invalid subnet {text}: host bits are set (did you mean {net}?)")
    if net.prefixlen > 30:
        raise UsageError(f"invalid subnet {text}: too small for a gateway and a container (at most /30)")
    for special, what in SPECIAL:
        if net.overlaps(special):
            raise UsageError(f"invalid subnet {text}: it overlaps {special}, {what}; use a private range "
                             f"such as 10.10.0.0/24 or 172.30.0.0/16")
    return net


def parse_address(text, flag):
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise UsageError(f"invalid {flag} address: {text}") from None


def overlap(subnet, others):
    """The first (network, what) of ``others`` that overlaps ``subnet``, or None."""
    for net, what in others:
        if subnet.overlaps(net):
            return net, what
    return None


def choose_subnet(taken, for_default_bridge=False):
    """The first pool subnet that overlaps nothing in ``taken`` [(network, what)]."""
    for candidate in default_pool(for_default_bridge):
        if not overlap(candidate, taken):
            return candidate
    raise UsageError("no free subnet left in the default pools: give one with --subnet")


def first_host(subnet):
    return subnet.network_address + 1


def pick_address(subnet, ip_range, gateway, taken):
    """The lowest free address for a container (an IPv4Address), or a clear error."""
    pool = ip_range or subnet
    not_for_containers = {subnet.network_address, subnet.broadcast_address, gateway}
    for address in pool.hosts() if pool.num_addresses > 2 else pool:
        if address not in not_for_containers and str(address) not in taken and address in subnet:
            return address
    raise UsageError(f"no address left in {pool}: every one is taken")


def mac_for(address):
    """Docker's MAC address scheme: 02:42 and then the four bytes of the IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)
