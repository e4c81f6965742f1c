"""Bridges and veth pairs, made with netlink (pyroute2), as ``ip link`` would make them.

    a bridge (man 8 bridge)   a virtual switch on the host; it holds the network's gateway
                              address, so the host routes the network's subnet to it
    a veth pair (man 4 veth)  a virtual cable: what goes in one end comes out of the other.
                              One end is plugged into the bridge, the other is moved into the
                              container's network namespace and renamed eth0 there.

Only labtool's own processes call this (never a Jupyter kernel: pyroute2's synchronous API
runs an event loop of its own, which a kernel already has). Every function opens its own
netlink socket and closes it.
"""

import errno
import ipaddress
import json
import os

from labtool import explain, process, syscalls


def _iproute():
    from pyroute2 import IPRoute   # heavy: imported only when a network is made

    return IPRoute()


def in_netns(pid, work):
    """Run ``work()`` in the network namespace of process ``pid`` and return its result.

    A forked child joins that namespace (setns(2), man 2 setns) and opens its netlink socket
    there, so that ``ip`` commands act on the container's links; we stay on the host's.
    """
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            os.write(w, json.dumps({"result": work()}).encode())
            os._exit(0)
        except BaseException as e:          # anything: report it, never run the parent's code
            os.write(w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            os._exit(1)
    os.close(w)
    data = process.read_all(r)
    os.waitpid(child, 0)
    answer = json.loads(data or b'{"error": "the helper process died"}')
    if "error" in answer:
        raise OSError(f"in the network namespace of {pid}: {answer['error']}")
    return answer["result"]


def host_routes():
    """The host's IPv4 routes as networks (``ip route``, main table), default route left out."""
    found = []
    with _iproute() as ipr:
        for route in ipr.get_routes(family=2, table=254):
            dst, length = route.get_attr("RTA_DST"), route["dst_len"]
            if dst and length:
                found.append((ipaddress.ip_network(f"{dst}/{length}", strict=False),
                              _ifname(ipr, route.get_attr("RTA_OIF"))))
    return found


def _ifname(ipr, index):
    if not index:
        return ""
    links = ipr.get_links(index)
    return links[0].get_attr("IFLA_IFNAME") if links else ""


def exists(ifname):
    """Is there a link of that name on the host? (sysfs lists them: /sys/class/net, man 5 sysfs)"""
    return os.path.exists(f"/sys/class/net/{ifname}")


def make_bridge(ifname, gateway, prefixlen):
    """``ip link add IFNAME type bridge; ip addr add GATEWAY/PREFIX dev IFNAME; ip link set up``."""
    explain.say("network", f"netlink: ip link add {ifname} type bridge",
                "a virtual switch for the network's containers")
    explain.say("network", f"netlink: ip addr add {gateway}/{prefixlen} dev {ifname}",
                "the gateway: the host's address on that network")
    with _iproute() as ipr:
        ipr.link("add", ifname=ifname, kind="bridge")
        index = ipr.link_lookup(ifname=ifname)[0]
        try:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up")
        except BaseException:
            ipr.link("del", index=index)
            raise


def remove_link(ifname):
    """``ip link del IFNAME``, if it is there (a veth's peer goes with it)."""
    with _iproute() as ipr:
        for index in ipr.link_lookup(ifname=ifname):
            try:
                ipr.link("del", index=index)
            except Exception as e:      # gone meanwhile (its namespace ended): nothing to do
                if getattr(e, "code", None) != errno.ENODEV:
                    raise


def plug(pid, bridge, veth, ifname, address, prefixlen, gateway, mac, default_route=True):
    """Connect the network namespace of process ``pid`` to ``bridge``:

        ip link add VETH type veth peer name IFNAME netns PID    (the peer appears inside)
        ip link set VETH master BRIDGE up
        inside: ip addr add ADDRESS/PREFIX dev IFNAME; ip link set IFNAME up;
                ip route add default via GATEWAY
    """
    explain.say("network", f"netlink: ip link add {veth} type veth peer name {ifname} netns {pid}",
                "a virtual cable: one end on the host, one in the container")
    explain.say("network", f"netlink: ip link set {veth} master {bridge} up", "plug the host end into the bridge")
    with _iproute() as ipr:
        ipr.link("add", ifname=veth, kind="veth", peer={"ifname": ifname, "net_ns_pid": pid})
        try:
            index = ipr.link_lookup(ifname=veth)[0]
            master = ipr.link_lookup(ifname=bridge)[0]
            ipr.link("set", index=index, master=master, state="up")
        except BaseException:
            remove_link(veth)
            raise
    explain.say("network", f"netlink in the container: ip addr add {address}/{prefixlen} dev {ifname}; "
                f"ip link set {ifname} up" + (f"; ip route add default via {gateway}" if default_route else ""),
                "its address on the network, and the way out")
    def inside():
        with _iproute() as ns:
            # lo up now (step 02 would do it a moment later in the child): the embedded DNS
            # server's socket on 127.0.0.11 is made in this namespace before the child runs
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            index = ns.link_lookup(ifname=ifname)[0]
            # IPv4 only, as Docker's networks without --ipv6: no IPv6 link-local address on it
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
                f.write("1")
            ns.link("set", index=index, address=mac)
            ns.addr("add", index=index, address=address, prefixlen=prefixlen)
            ns.link("set", index=index, state="up")
            if default_route:
                ns.route("add", dst="default", gateway=gateway)

    try:
        in_netns(pid, inside)
    except BaseException:
        remove_link(veth)
        raise


def free_ifname(pid):
    """The first of eth0, eth1, ... not taken in the network namespace of ``pid``."""
    def names():
        with _iproute() as ns:
            return [link.get_attr("IFLA_IFNAME") for link in ns.get_links()]

    taken = set(in_netns(pid, names))
    n = 0
    while f"eth{n}" in taken:
        n += 1
    return f"eth{n}"


def has_default_route(pid):
    def default():
        with _iproute() as ns:
            return any(r["dst_len"] == 0 for r in ns.get_routes(family=2, table=254))

    return in_netns(pid, default)


def links():
    """Names of all links on the host (``ip link``)."""
    with _iproute() as ipr:
        return [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
