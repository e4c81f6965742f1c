"""Step 05: the embedded DNS resolver at 127.0.0.11, Docker's model.

The wire format is checked byte by byte; the resolver is checked the way a container sees
it: from inside a network namespace made by the test, with busybox ``nslookup`` and a Python
client. Names the resolver does not know go to a fake upstream server on 127.0.0.1 made by
the test: nothing here ever asks a real nameserver.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from labtool.errors import LabtoolError
from labtool.network import dns

# A fake upstream nameserver: "outside.test" is 192.0.2.99, everything else NXDOMAIN.
UPSTREAM = """
import socket, sys
from labtool.network import dns
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, addr = s.recvfrom(65535)
    out = dns.respond(data, "upstream", lambda cid, name: ["192.0.2.99"] if name == "outside.test" else [])
    s.sendto(out or dns.error_reply(data, dns.NXDOMAIN), addr)
"""

# The resolver with a test's own table of names instead of labtool.network.names.
RESOLVER = """
import json, sys
from labtool.network import dns
table = json.loads(sys.argv[1])
dns.serve(resolve=lambda cid, name: table.get(cid, {}).get(name, []),
          upstreams=[tuple(u) for u in json.loads(sys.argv[2])])
"""


def test_query_round_trip_and_compression_pointers():
    q = dns.build_query("web.example", dns.A, ident=0x1234)
    assert q[:12] == struct.pack("!HHHHHH", 0x1234, dns.RD, 1, 0, 0, 0)
    assert q[12:] == b"\x03web\x07example\x00" + struct.pack("!HH", dns.A, dns.IN)
    m = dns.parse_message(q)
    assert (m.id, m.questions) == (0x1234, [dns.Question("web.example", dns.A, dns.IN)])
    # an answer whose record names are pointers: one to the question (offset 12), one to
    # "example" inside it (offset 16) after a label of its own
    answer = (struct.pack("!HHHHHH", 0x1234, dns.QR | dns.RD | dns.RA, 1, 2, 0, 0) + q[12:]
              + struct.pack("!HHHIH", 0xC00C, dns.A, dns.IN, 60, 4) + bytes([10, 0, 0, 5])
              + b"\x03www" + struct.pack("!HHHIH", 0xC010, dns.A, dns.IN, 60, 4) + bytes([10, 0, 0, 6]))
    m = dns.parse_message(answer)
    assert [r.name for r in m.answers] == ["web.example", "www.example"]
    assert m.addresses() == ["10.0.0.5", "10.0.0.6"]
    loop = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    with pytest.raises(dns.DNSFormatError, match="loop"):
        dns.parse_message(loop)


def test_respond_answers_its_names_and_leaves_the_rest_to_forward():
    table = {"web": ["10.0.0.5", "10.0.0.6"]}
    look = lambda cid, name: table.get(name, []) if cid == "c1" else []
    m = dns.parse_message(dns.respond(dns.build_query("WEB."), "c1", look))
    assert m.flags & dns.QR and m.flags & dns.AA and m.rcode == dns.NOERROR
    assert m.addresses() == ["10.0.0.5", "10.0.0.6"] and m.answers[0].ttl == dns.TTL
    m = dns.parse_message(dns.respond(dns.build_query("web", dns.AAAA), "c1", look))
    assert m.rcode == dns.NOERROR and m.answers == []          # known name, no IPv6: no data
    assert dns.respond(dns.build_query("web"), "c2", look) is None   # c2 does not see web: forward
    assert dns.respond(dns.build_query("web", dns.MX), "c1", look) is None
    assert dns.parse_message(dns.respond(b"\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab",
                                         "c1", look)).rcode == dns.FORMERR
    assert dns.parse_message(dns.error_reply(dns.build_query("x"), dns.REFUSED)).rcode == dns.REFUSED


def test_resolv_conf_files(tmp_path):
    assert dns.container_resolv_conf() == "nameserver 127.0.0.11\noptions ndots:0\n"
    assert dns.container_resolv_conf(["lab"]) == "nameserver 127.0.0.11\nsearch lab\noptions ndots:0\n"
    f = tmp_path / "resolv.conf"
    f.write_text("# comment\nnameserver 10.1.2.3\nnameserver ::1\nsearch x\nnameserver 127.0.0.53\n")
    assert dns.host_upstreams(str(f)) == [("10.1.2.3", 53), ("127.0.0.53", 53)]
    assert dns.host_upstreams(str(tmp_path / "none")) == []


# --- the resolver, seen from inside network namespaces -------------------------------------------

@pytest.fixture
def root(tmp_path, monkeypatch):
    """A labtool root of the test's own, so its resolver is not the session's."""
    monkeypatch.setenv("LABTOOL_ROOT", str(tmp_path / "root"))
    yield tmp_path / "root"
    dns.stop()


@pytest.fixture
def netns():
    made = []

    def make():
        name = f"lt-dnstest-{os.getpid()}-{len(made)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        made.append(name)
        return name
    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name])


@pytest.fixture
def upstream():
    p = subprocess.Popen([sys.executable, "-c", UPSTREAM], stdout=subprocess.PIPE, text=True)
    yield ("127.0.0.1", int(p.stdout.readline()))
    p.kill()
    p.wait()


def start_resolver(table, upstreams):
    p = subprocess.Popen([sys.executable, "-c", RESOLVER, json.dumps(table), json.dumps(upstreams)])
    deadline = time.time() + 10
    while not (dns.running() and os.path.exists(dns._sock_path())):
        assert time.time() < deadline and p.poll() is None, "the resolver did not start"
        time.sleep(0.02)
    return p


def ask(ns, name, qtype="A", tcp=False, timeout=1):
    """rcode and addresses, as a Python client inside namespace ``ns`` sees them."""
    code = ("import sys; from labtool.network import dns\n"
            "try:\n"
            f"    m = dns.query('127.0.0.11', {name!r}, dns.{qtype}, tcp={tcp}, timeout={timeout})\n"
            "    print(m.rcode, ','.join(m.addresses()))\n"
            "except OSError as e:\n"
            "    print(type(e).__name__)\n")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30).stdout.strip()


def test_containers_resolve_their_names_and_the_rest_is_forwarded(root, netns, upstream):
    a, b = netns(), netns()
    table = {"ctr-a": {"web": ["10.0.0.5"], "db": ["10.0.0.6"]}, "ctr-b": {"db": ["10.0.0.6"]}}
    server = start_resolver(table, [upstream])
    dns.attach("ctr-a", f"/run/netns/{a}")
    dns.attach("ctr-b", f"/run/netns/{b}")
    dns.attach("ctr-b", f"/run/netns/{b}")                 # again (a second network): nothing changes
    assert sorted(dns.attached()) == ["ctr-a", "ctr-b"]
    assert ask(a, "web") == "0 10.0.0.5"
    assert ask(a, "Web.") == "0 10.0.0.5"
    assert ask(a, "web", tcp=True) == "0 10.0.0.5"
    assert ask(a, "web", "AAAA") == "0"
    assert ask(b, "db") == "0 10.0.0.6"
    assert ask(b, "web") == f"{dns.NXDOMAIN}"              # b does not see web: upstream says no
    assert ask(a, "outside.test") == "0 192.0.2.99"          # forwarded, the answer relayed
    assert ask(a, "outside.test", tcp=True) == "0 192.0.2.99"
    out = subprocess.run(["ip", "netns", "exec", a, "busybox", "nslookup", "web", "127.0.0.11"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "127.0.0.11" in out and "Address: 10.0.0.5" in out, out
    dns.detach("ctr-a")
    assert ask(a, "web") in ("ConnectionRefusedError", "TimeoutError")
    assert dns.attached() == ["ctr-b"]
    c = netns()                                               # ctr-b restarted: a new namespace
    dns.attach("ctr-b", f"/run/netns/{c}")
    assert ask(c, "db") == "0 10.0.0.6"
    assert ask(b, "db") in ("ConnectionRefusedError", "TimeoutError")
    dns.detach("ctr-b")                                       # the last one: the resolver leaves
    server.wait(timeout=10)
    assert not dns.running() and not os.path.exists(dns._sock_path())


def test_no_upstream_is_refused_and_dns_flag_upstreams_are_used(root, netns, upstream):
    a, b = netns(), netns()
    server = start_resolver({}, [])
    dns.attach("ctr-a", f"/run/netns/{a}")
    dns.attach("ctr-b", f"/run/netns/{b}", upstreams=[upstream])    # like --dns for this container
    assert ask(a, "outside.test") == f"{dns.REFUSED}"
    assert ask(b, "outside.test") == "0 192.0.2.99"
    dns.stop()
    server.wait(timeout=10)


def test_an_upstream_that_does_not_answer_is_servfail(root, netns):
    a = netns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:      # a port nobody reads
        s.bind(("127.0.0.1", 0))
        silent = s.getsockname()[1]
        server = start_resolver({}, [["127.0.0.1", silent]])
        dns.attach("ctr-a", f"/run/netns/{a}")
        t0 = time.time()
        assert ask(a, "outside.test", timeout=5) == f"{dns.SERVFAIL}"
        assert time.time() - t0 < dns.Resolver.FORWARD_TIMEOUT + 2
    dns.stop()
    server.wait(timeout=10)


def test_attach_starts_the_resolver_on_demand_and_it_leaves_after_the_last(root, netns):
    a = netns()
    assert not dns.running()
    dns.attach("ctr-a", f"/run/netns/{a}")
    pid = dns.running()
    assert pid and dns.attached() == ["ctr-a"]
    listening = subprocess.run(["ip", "netns", "exec", a, "ss", "-lnu"], capture_output=True, text=True).stdout
    assert "127.0.0.11:53" in listening
    dns.detach("ctr-a")
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not dns.running()


def test_attach_works_before_the_containers_loopback_is_up(root):
    name = f"lt-dnstest-{os.getpid()}-lo"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "down"], check=True)
    server = start_resolver({"ctr-x": {"web": ["10.0.0.5"]}}, [])
    try:
        dns.attach("ctr-x", f"/run/netns/{name}")
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        assert ask(name, "web") == "0 10.0.0.5"
    finally:
        dns.stop()
        server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name])


def test_attach_to_a_namespace_that_is_gone_is_a_clear_error(root):
    with pytest.raises(LabtoolError, match="cannot listen on 127.0.0.11:53 in /run/netns/lt-no-such-ns"):
        dns.attach("ctr-x", "/run/netns/lt-no-such-ns")
    assert not dns.running()


def test_an_upstream_that_is_closed_is_servfail_at_once(root, netns):
    a = netns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:      # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    server = start_resolver({}, [["127.0.0.1", closed]])
    dns.attach("ctr-a", f"/run/netns/{a}")
    t0 = time.time()
    assert ask(a, "outside.test", timeout=5) == f"{dns.SERVFAIL}"
    assert time.time() - t0 < dns.Resolver.FORWARD_TIMEOUT      # the ICMP "port unreachable" ends it
    dns.stop()
    server.wait(timeout=10)
