"""Step 05: published ports, icc=false and links, in labtool's own iptables chains.

The fixture builds by hand what a bridged container has (a bridge, a veth pair per
"container", a network namespace with a small Python server in it), so these tests check the
firewall and NAT alone; the runtime's own wiring is tested with real containers elsewhere.
All traffic stays on this host: loopback, the host's own address, the test's namespaces.
"""

import ipaddress
import os
import random
import socket
import subprocess
import sys
import time

import pytest

from labtool.errors import LabtoolError
from labtool.network import naming, ports, publish


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True, text=True)


def host_address():
    """The host's own (non-loopback) IPv4 address: published ports answer there too."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True).stdout
    addrs = [line.split()[3].split("/")[0] for line in out.splitlines() if not line.split()[1].startswith("lt")]
    assert addrs, "this host has no global IPv4 address to test with"
    return addrs[0]


def free_subnet():
    routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(w, strict=False) for line in routes.splitlines() for w in line.split()[:2]
            if "/" in w]
    while True:
        net = ipaddress.ip_network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net


# A tiny TCP server: it says who it is to every client. (``python -m http.server --bind IP``
# would do, but it looks up its own name first, and DNS in a bare namespace takes seconds to fail.)
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(sys.argv[3].encode())
    c.close()
"""

CLIENT = """
import socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((ip, port), timeout=float(sys.argv[3]))
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode())
except OSError as e:
    print(type(e).__name__)
"""


class Lab:
    """A bridge with two namespaces on it ("a" and "b"), each able to run a server."""

    def __init__(self, tmp_path):
        # names as this root's own links (labtool/network/naming.py), so the host guard checks them
        tag = f"{random.randint(0, 0xffff):04x}"
        self.bridge = f"lt{naming.tag()}-pt{tag}"
        self.subnet = free_subnet()
        hosts = list(self.subnet.hosts())
        self.gateway, self.ip = str(hosts[0]), {"a": str(hosts[1]), "b": str(hosts[2])}
        self.ns = {n: f"lt-pubtest-{os.getpid()}-{tag}-{n}" for n in "ab"}
        self.veth = {n: f"ltv{naming.tag()}-{tag}{n}" for n in "ab"}
        self.tmp = tmp_path
        self.servers = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for n in "ab":
            sh("ip", "netns", "add", self.ns[n])
            sh("ip", "link", "add", self.veth[n], "type", "veth", "peer", "name", "eth0", "netns", self.ns[n])
            sh("ip", "link", "set", self.veth[n], "master", self.bridge, "up")
            sh("ip", "-n", self.ns[n], "addr", "add", f"{self.ip[n]}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[n], "link", "set", "eth0", "up")
            sh("ip", "-n", self.ns[n], "link", "set", "lo", "up")
            sh("ip", "-n", self.ns[n], "route", "add", "default", "via", self.gateway)

    def serve(self, n, port):
        """A server in namespace ``n`` on ``port`` that greets each client with who it is."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], sys.executable, "-c", SERVER, self.ip[n], str(port),
                              f"hello from {n}:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)
        deadline = time.time() + 10
        while self.get(self.ip[n], port, ns=n) != f"hello from {n}:{port}":
            assert time.time() < deadline, "the test web server did not start"
            time.sleep(0.1)

    def get(self, ip, port, ns=None, timeout=1.0):
        """Connect from the host (ns None) or from inside a namespace; the body or the error."""
        argv = [sys.executable, "-c", CLIENT, ip, str(port), str(timeout)]
        if ns:
            argv = ["ip", "netns", "exec", self.ns[ns]] + argv
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()

    def close(self):
        for p in self.servers:
            p.kill()
            p.wait()
        for n in "ab":
            subprocess.run(["ip", "netns", "del", self.ns[n]], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        deadline = time.time() + 5      # the host ends of the veths go with their namespaces, a moment later
        while any(os.path.exists(f"/sys/class/net/{v}") for v in self.veth.values()) and time.time() < deadline:
            time.sleep(0.05)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """The links are named as the test run's own (the host guard checks them); the rules are made
    under a labtool root of the test's own, so that its chains start and end empty."""
    lab = Lab(tmp_path)
    monkeypatch.setenv("LABTOOL_ROOT", str(tmp_path / "root"))
    owners = []
    lab.owners = owners
    try:
        publish.add_bridge(lab.bridge, str(lab.subnet))
        yield lab
    finally:
        for owner in owners:
            publish.unpublish(owner)
        publish.remove_bridge(lab.bridge)
        lab.close()
    assert publish.listed() == [], "rules were left behind"


def test_chain_names_are_per_root(monkeypatch):
    monkeypatch.delenv("LABTOOL_ROOT")
    assert publish.chain("DNAT") == "LABTOOL-DNAT" and publish.chain_tag("LABTOOL-DNAT") == ""
    monkeypatch.setenv("LABTOOL_ROOT", "/tmp/one")
    one = publish.chain("FWD")
    monkeypatch.setenv("LABTOOL_ROOT", "/tmp/two")
    two = publish.chain("FWD")
    assert one != two and len(one) <= 28 and publish.chain_tag(one) == one.split("-")[1]
    assert publish.chain_tag("DOCKER") is None and publish.chain_tag("LABTOOL-xyz-FWD") is None


def test_published_port_answers_on_loopback_and_the_hosts_address(lab):
    lab.serve("a", 80)
    lab.owners.append("ctr-a")
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("80"))
    low, high = ports.ephemeral_range()
    assert low <= b.host_port <= high
    assert lab.get("127.0.0.1", b.host_port) == "hello from a:80"
    assert lab.get(host_address(), b.host_port) == "hello from a:80"
    # a peer on the bridge reaches it through the host, as clients of a real service would
    assert lab.get(lab.gateway, b.host_port, ns="b") == "hello from a:80"
    assert ports.format_ps([b]) == f"0.0.0.0:{b.host_port}->80/tcp"
    assert any("DNAT" in line and f"--dport {b.host_port}" in line for line in publish.listed())
    publish.unpublish("ctr-a")
    assert lab.get("127.0.0.1", b.host_port) == "ConnectionRefusedError"
    assert not any("ctr-a" in line for line in publish.listed())


def test_publishing_on_one_address_only(lab):
    lab.serve("a", 80)
    lab.owners.append("ctr-a")
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("127.0.0.1::80"))
    assert lab.get("127.0.0.1", b.host_port) == "hello from a:80"
    assert lab.get(host_address(), b.host_port) == "ConnectionRefusedError"


def test_a_taken_port_is_one_clear_error_and_nothing_is_made(lab):
    before = publish.listed()
    with socket.socket() as s:                       # a host process holds a port
        s.bind(("0.0.0.0", 0))
        s.listen()
        held = s.getsockname()[1]
        with pytest.raises(LabtoolError) as e:
            publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("81") + ports.parse(f"{held}:80"))
        assert str(e.value) == f"Bind for 0.0.0.0:{held} failed: port is already allocated"
    assert publish.listed() == before
    with pytest.raises(LabtoolError, match="cannot publish on 192.0.2.1: bind: cannot assign requested address"):
        publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("192.0.2.1:8080:80"))
    assert publish.listed() == before
    lab.owners += ["ctr-a", "ctr-b"]
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("80"))   # another container holds one
    with pytest.raises(LabtoolError, match=f"Bind for 127.0.0.1:{b.host_port} failed: port is already allocated"):
        publish.publish("ctr-b", lab.bridge, lab.ip["b"], ports.parse(f"127.0.0.1:{b.host_port}:80"))
    assert not any("ctr-b" in line for line in publish.listed())


def test_icc_false_blocks_peers_and_a_link_opens_exactly_its_ports(lab):
    lab.serve("a", 80)
    lab.serve("a", 81)
    assert lab.get(lab.ip["a"], 81, ns="b") == "hello from a:81"
    publish.set_icc(lab.bridge, False)
    assert lab.get(lab.ip["a"], 80, ns="b") == "TimeoutError"
    assert lab.get(lab.ip["a"], 81, ns="b") == "TimeoutError"
    lab.owners.append("ctr-b")
    publish.allow_link("ctr-b", lab.bridge, lab.ip["b"], lab.ip["a"], [(80, "tcp")])
    assert lab.get(lab.ip["a"], 80, ns="b") == "hello from a:80"
    assert lab.get(lab.ip["a"], 81, ns="b") == "TimeoutError"
    # the host itself is not a peer: it still reaches both
    assert lab.get(lab.ip["a"], 81) == "hello from a:81"
    # a published port stays reachable from the peer, through the host
    lab.owners.append("ctr-a")
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("81"))
    assert lab.get(lab.gateway, b.host_port, ns="b") == "hello from a:81"
    publish.unpublish("ctr-b")
    assert lab.get(lab.ip["a"], 80, ns="b") == "TimeoutError"
    publish.set_icc(lab.bridge, True)
    assert lab.get(lab.ip["a"], 81, ns="b") == "hello from a:81"


def test_the_bridge_setting_is_per_bridge_and_the_host_switch_is_untouched(lab):
    before = open("/proc/sys/net/bridge/bridge-nf-call-iptables").read()
    publish.set_icc(lab.bridge, False)
    out = subprocess.run(["ip", "-d", "link", "show", lab.bridge], capture_output=True, text=True).stdout
    assert "nf_call_iptables 1" in out
    assert open(f"/proc/sys/net/ipv4/conf/{lab.bridge}/route_localnet").read().strip() == "1"
    assert open("/proc/sys/net/bridge/bridge-nf-call-iptables").read() == before


def test_remove_all_takes_this_roots_chains_and_jumps(lab):
    publish.set_icc(lab.bridge, False)
    assert any(publish.chain("ICC") in line for line in publish.listed())
    publish.remove_all()
    assert publish.listed() == []
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert publish.chain("FWD") not in out


def test_route_localnet_is_what_makes_loopback_work(lab):
    """FACTS.md: without route_localnet on the bridge, 127.0.0.1:PORT stops working."""
    lab.serve("a", 80)
    lab.owners.append("ctr-a")
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("80"))
    localnet = f"/proc/sys/net/ipv4/conf/{lab.bridge}/route_localnet"
    with open(localnet, "w") as f:
        f.write("0")
    assert lab.get("127.0.0.1", b.host_port) == "TimeoutError"      # the kernel drops it as a martian
    assert lab.get(host_address(), b.host_port) == "hello from a:80"  # the host's address does not need it
    with open(localnet, "w") as f:
        f.write("1")
    assert lab.get("127.0.0.1", b.host_port) == "hello from a:80"
    assert lab.get(lab.gateway, b.host_port, ns="b") == "hello from a:80"


def test_explain_narrates_each_rule(lab, capfd, monkeypatch):
    from labtool import explain

    monkeypatch.setattr(explain, "enabled", True)
    lab.owners.append("ctr-a")
    [b] = publish.publish("ctr-a", lab.bridge, lab.ip["a"], ports.parse("8080:80"))
    err = capfd.readouterr().err
    assert f"[network] iptables -t nat -A {publish.chain('DNAT')} -p tcp --dport 8080 -j DNAT" in err
    assert "host port 8080 -> " in err


def test_icc_false_works_by_the_bridges_own_switch_even_when_the_hosts_is_off(tmp_path):
    """The design choice, measured: in a namespace of its own that plays the host, with the
    global ``net.bridge.bridge-nf-call-iptables`` at 0 (a per-namespace setting), icc=false
    still blocks, because publish.py turns on the bridge's own ``nf_call_iptables``; turn that
    off and the DROP rule is never consulted."""
    tag = f"{os.getpid()}-{random.randint(0, 0xffff):04x}"
    ns = {n: f"lt-nftest-{tag}-{n}" for n in ("h", "a", "b")}
    ip = {"a": "10.77.0.2", "b": "10.77.0.3"}
    server = None
    try:
        for name in ns.values():
            sh("ip", "netns", "add", name)
        h = ns["h"]
        sh("ip", "netns", "exec", h, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
        sh("ip", "-n", h, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", h, "addr", "add", "10.77.0.1/24", "dev", "br0")
        sh("ip", "-n", h, "link", "set", "br0", "up")
        for n in "ab":
            sh("ip", "-n", h, "link", "add", f"v{n}", "type", "veth", "peer", "name", "eth0", "netns", ns[n])
            sh("ip", "-n", h, "link", "set", f"v{n}", "master", "br0", "up")
            sh("ip", "-n", ns[n], "addr", "add", f"{ip[n]}/24", "dev", "eth0")
            sh("ip", "-n", ns[n], "link", "set", "eth0", "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns["b"], sys.executable, "-c", SERVER, ip["b"], "80", "b"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def get():
            argv = ["ip", "netns", "exec", ns["a"], sys.executable, "-c", CLIENT, ip["b"], "80", "1"]
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        deadline = time.time() + 10
        while get() != "b":
            assert time.time() < deadline, "the test server did not start"
            time.sleep(0.1)
        env = dict(os.environ, LABTOOL_ROOT=str(tmp_path / "root"))
        code = "from labtool.network import publish; publish.add_bridge('br0', '10.77.0.0/24', icc=False)"
        subprocess.run(["ip", "netns", "exec", h, sys.executable, "-c", code], check=True, env=env)
        assert get() == "TimeoutError"
        sh("ip", "-n", h, "link", "set", "br0", "type", "bridge", "nf_call_iptables", "0")
        assert get() == "b"                    # the same DROP rule is there, but never consulted
    finally:
        if server:
            server.kill()
            server.wait()
        for name in ns.values():             # the "host" namespace takes its bridge and rules along
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
