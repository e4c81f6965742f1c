"""Step 05: networking, as a learner would observe it.

All traffic stays on the host's loopback and inside the network namespaces and bridges these
tests make (a bridge's gateway address is the host's address on a network made here).
"""

import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import REPO, labtool

HTTPD = ("httpd", "-f", "-p", "80", "-h", "/etc")     # busybox's web server: /hostname answers who it is


@pytest.fixture
def networks(run):
    """Unique network names for a test; removed after it (after its containers)."""
    made = []

    def network(base, *flags):
        name = f"{base}-{os.getpid()}-{len(made)}"
        p = run("network", "create", *flags, name)
        assert p.returncode == 0, p.stderr
        made.append(name)
        return name

    yield network
    for name in made:              # (the containers on it first: the names fixture comes later)
        p = run("network", "inspect", name)
        on_it = [e["Name"] for e in json.loads(p.stdout)[0]["Containers"].values()] if p.returncode == 0 else []
        if on_it:
            run("rm", "-f", *on_it)
    if made:
        run("network", "rm", *made)


def detached(run, name, *args, command=HTTPD):
    p = run("run", "-d", "--name", name, *args, "busybox", *command)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def inspect(run, name):
    p = run("inspect", name)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)[0]


def address(run, name, network=None):
    settings = inspect(run, name)["NetworkSettings"]
    return settings["Networks"][network]["IPAddress"] if network else settings["IPAddress"]


def fetch(run, name_or_flags, url, timeout=2):
    """``wget`` run inside a container: in a running one (exec) or in a new one on a network.
    (busybox 1.35's ``wget -T`` crashes: ``timeout`` bounds it instead.)"""
    cmd = ["timeout", str(timeout), "wget", "-qO-", url]
    if isinstance(name_or_flags, str):
        return run("exec", name_or_flags, *cmd)
    return run("run", "--rm", *name_or_flags, "busybox", *cmd)


def wait_for_http(run, name, url):
    """busybox httpd needs a moment after the container starts."""
    for _ in range(50):
        if fetch(run, name, url, timeout=1).returncode == 0:
            return
        time.sleep(0.1)


# --- the modes -------------------------------------------------------------------------------

def test_none_has_only_loopback(run):
    p = run("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in p.stdout.splitlines()] == ["lo"]


def test_bridge_gives_eth0_an_address_and_a_default_route(run):
    p = run("run", "--rm", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ip route")
    assert p.returncode == 0, p.stderr
    cidr = p.stdout.split()[3]
    route = [line for line in p.stdout.splitlines() if line.startswith("default via")]
    assert route, p.stdout
    gateway = route[0].split()[2]
    assert ipaddress.ip_address(gateway) in ipaddress.ip_interface(cidr).network
    inspected = json.loads(run("network", "inspect", "bridge").stdout)[0]
    assert inspected["IPAM"]["Config"][0]["Gateway"] == gateway
    # the default subnet is no route of the host's (other than its own bridge's)
    bridge = inspected["Options"]["com.docker.network.bridge.name"]
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout.splitlines()
    subnet = ipaddress.ip_network(inspected["IPAM"]["Config"][0]["Subnet"])
    for line in routes:
        dst = line.split()[0]
        if dst != "default" and f"dev {bridge} " not in line + " ":
            assert not subnet.overlaps(ipaddress.ip_network(dst, strict=False)), line


def test_host_sees_the_hosts_links(run):
    p = run("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    host = [name for name in os.listdir("/sys/class/net") if not name.startswith("lt")]
    assert set(host) <= set(p.stdout.split())


def test_container_mode_shares_one_stack(run, names):
    a = names("stack")
    detached(run, a)
    ip = address(run, a)
    wait_for_http(run, a, "http://127.0.0.1/hostname")
    p = run("run", "--rm", "--network", f"container:{a}", "busybox", "sh", "-c",
            "ip -o -4 addr show eth0; timeout 2 wget -qO- http://127.0.0.1/hostname")
    assert f"inet {ip}/" in p.stdout                         # the same eth0, the same address
    assert p.stdout.strip().endswith(inspect(run, a)["Id"][:12])   # its httpd, on our 127.0.0.1
    # what the other container's stack decides cannot be set here: Docker's errors, not silence
    for flags, what in ((["--dns", "9.9.9.9"], "dns"), (["--add-host", "zz:1.2.3.4"], "custom host-to-IP mapping"),
                        (["--hostname", "other"], "hostname")):
        p = run("run", "--rm", "--network", f"container:{a}", *flags, "busybox", "true")
        assert p.returncode == 125 and p.stderr == \
            f"labtool: conflicting options: {what} and the network mode (--network container:{a})\n"


# --- who reaches whom ------------------------------------------------------------------------

def test_connectivity_matrix(run, names, networks):
    one, two = networks("one"), networks("two")
    closed = networks("closed", "-o", "icc=false")
    a, b, c, d, e = (names(x) for x in "abcde")
    detached(run, a, "--network", one)
    detached(run, b, "--network", one, command=("sleep", "60"))
    detached(run, c, "--network", two, command=("sleep", "60"))
    detached(run, d, "--network", closed)
    detached(run, e, "--network", closed, command=("sleep", "60"))
    url_a = f"http://{address(run, a)}/hostname"
    wait_for_http(run, a, url_a)
    assert fetch(run, b, url_a).returncode == 0                      # same network: yes
    assert fetch(run, c, url_a, timeout=1).returncode != 0           # another network: no
    assert fetch(run, e, f"http://{address(run, d)}/hostname", timeout=1).returncode != 0   # icc=false: no
    gateway = json.loads(run("network", "inspect", closed).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    assert run("exec", e, "ping", "-c", "1", "-W", "1", gateway).returncode == 0   # (the host still is)


def test_a_link_opens_only_the_exposed_ports_under_icc_false(run, names, networks):
    closed = networks("linked", "-o", "icc=false")
    db, other, client = names("db"), names("other"), names("client")
    detached(run, db, "--network", closed, "--expose", "80")
    detached(run, other, "--network", closed, command=("nc", "-lk", "-p", "81", "-e", "echo", "hi"))
    detached(run, client, "--network", closed, "--link", f"{db}:web", command=("sleep", "60"))
    ip = address(run, db)
    assert fetch(run, client, f"http://{ip}/hostname").returncode == 0                # the exposed port: open
    assert run("exec", client, "nc", "-w", "1", address(run, other), "81").stdout == ""  # an unlinked one: no
    assert fetch(run, other, f"http://{ip}/hostname", timeout=1).returncode != 0      # no link, no way in


def test_default_bridge_links_env_hosts_and_icc_false(tmp_path):
    """A labtool root of its own whose default bridge has icc off (daemon.json, as dockerd --icc=false)."""
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    os.chmod(tmp_path, 0o711)
    os.chmod(root, 0o711)
    (root / "lib" / "daemon.json").write_text('{"icc": false}')
    env = dict(os.environ, LABTOOL_ROOT=str(root))

    def lt(*args):
        return labtool(*args, env=env)

    try:
        assert lt("run", "-d", "--name", "db", "--expose", "80", "-e", "SECRET=42", "busybox", *HTTPD).returncode == 0
        assert lt("run", "-d", "--name", "nolink", "busybox", "sleep", "60").returncode == 0
        p = lt("run", "--rm", "--link", "db:web", "busybox", "sh", "-c",
               "env | grep ^WEB_ | sort; grep web /etc/hosts; timeout 2 wget -qO- http://web/hostname")
        assert p.returncode == 0, p.stderr
        db_ip = json.loads(lt("inspect", "db").stdout)[0]["NetworkSettings"]["IPAddress"]
        assert f"WEB_PORT=tcp://{db_ip}:80" in p.stdout
        assert f"WEB_PORT_80_TCP_ADDR={db_ip}" in p.stdout
        assert "WEB_ENV_SECRET=42" in p.stdout
        assert f"{db_ip}\tweb" in p.stdout
        assert p.stdout.strip().endswith(json.loads(lt("inspect", "db").stdout)[0]["Id"][:12])
        p = lt("exec", "nolink", "timeout", "1", "wget", "-qO-", f"http://{db_ip}/hostname")
        assert p.returncode != 0                                   # no link, icc=false: no way in
    finally:
        said = lt("reset").stdout
    tag = _tag(root)
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith((f"lt{tag}", f"ltv{tag}"))], said
    assert f"LABTOOL-{_chain_tag(root)}-" not in subprocess.run(["iptables-save"], capture_output=True,
                                                                 text=True).stdout


def _tag(root):
    import hashlib

    return hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:4]


def _chain_tag(root):
    import hashlib

    return hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:6]


# --- published ports -------------------------------------------------------------------------

def test_publish_from_loopback_and_from_a_peer(run, names, networks):
    net = networks("pub")
    web, peer = names("web"), names("peer")
    detached(run, web, "--network", net, "-p", "127.0.0.1::80")
    detached(run, peer, "--network", net, command=("sleep", "60"))
    port = run("port", web, "80").stdout.strip()
    assert port.startswith("127.0.0.1:")
    host_port = int(port.split(":")[1])
    wait_for_http(run, web, "http://127.0.0.1/hostname")
    ident = inspect(run, web)["Id"][:12]
    body = ""
    for _ in range(20):
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{host_port}/hostname", timeout=2).read().decode()
            break
        except OSError:
            time.sleep(0.1)
    assert body.strip() == ident                                      # from the host's loopback
    ps = run("ps", "-f", f"name={web}").stdout
    assert f"127.0.0.1:{host_port}->80/tcp" in ps
    ports = inspect(run, web)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]}
    # a peer reaches it through the host: the bridge's gateway is the host's address there
    gateway = json.loads(run("network", "inspect", net).stdout)[0]["IPAM"]["Config"][0]["Gateway"]
    other = names("other")
    detached(run, other, "--network", net, "-p", f"{gateway}::80")
    peer_port = int(run("port", other, "80").stdout.strip().split(":")[1])
    wait_for_http(run, other, "http://127.0.0.1/hostname")
    p = fetch(run, peer, f"http://{gateway}:{peer_port}/hostname")
    assert p.stdout.strip() == inspect(run, other)["Id"][:12], p.stderr


def test_a_port_taken_is_a_clear_error_and_leaves_nothing(run, names):
    a, b = names("first"), names("second")
    detached(run, a, "-p", "127.0.0.1::80")
    host_port = run("port", a, "80").stdout.strip().split(":")[1]
    before = _host_objects()
    p = run("run", "--rm", "--name", b, "-p", f"127.0.0.1:{host_port}:80", "busybox", "true")
    assert p.returncode == 125 and len(p.stderr.splitlines()) == 1, p.stderr
    assert "port is already allocated" in p.stderr
    assert _host_objects() == before


# --- names -----------------------------------------------------------------------------------

def test_etc_hosts_resolv_conf_add_host_and_dns(run, names):
    p = run("run", "--rm", "--hostname", "box", "--add-host", "db.lab:10.9.8.7", "--dns", "10.1.1.1",
            "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf; ip -o -4 addr show eth0")
    ip = p.stdout.split("inet ")[1].split("/")[0]
    assert "10.9.8.7\tdb.lab" in p.stdout
    assert f"{ip}\tbox" in p.stdout
    assert "nameserver 10.1.1.1" in p.stdout
    p = run("run", "--rm", "--add-host", "nocolon", "busybox", "true")
    assert p.returncode == 125 and "--add-host" in p.stderr


def test_dns_by_name_and_alias_on_a_user_network(run, names, networks):
    pytest.importorskip("labtool.network.dns")
    net = networks("dns")
    web, client = names("web"), names("client")
    detached(run, web, "--network", net, "--network-alias", "www")
    detached(run, client, "--network", net, command=("sleep", "60"))
    ip = address(run, web)
    for name in (web, "www"):
        p = run("exec", client, "nslookup", name)
        assert ip in p.stdout, (name, p.stdout, p.stderr)
    wait_for_http(run, web, "http://127.0.0.1/hostname")
    assert fetch(run, client, "http://www/hostname").stdout.strip() == inspect(run, web)["Id"][:12]
    # not on the default bridge: no embedded server there (--dns 127.0.0.1: the question stays on
    # the container's own loopback, where nobody answers, instead of going to the host's nameserver)
    p = run("run", "--rm", "--dns", "127.0.0.1", "busybox", "sh", "-c", f"cat /etc/resolv.conf; nslookup {web}")
    assert "nameserver 127.0.0.1" in p.stdout and "127.0.0.11" not in p.stdout and ip not in p.stdout


def test_connect_and_disconnect_live(run, names, networks):
    left, right = networks("left"), networks("right")
    web, client = names("web"), names("client")
    detached(run, web, "--network", left)
    detached(run, client, "--network", right, command=("sleep", "60"))
    url = f"http://{address(run, web)}/hostname"
    wait_for_http(run, web, url)
    assert fetch(run, client, url, timeout=1).returncode != 0
    assert run("network", "connect", "--alias", "buddy", left, client).returncode == 0
    links = run("exec", client, "ip", "-o", "-4", "addr").stdout
    assert "eth1" in links
    assert fetch(run, client, url).returncode == 0                         # at once, same process
    networks_now = inspect(run, client)["NetworkSettings"]["Networks"]
    assert set(networks_now) == {left, right}
    mine = [networks_now[n]["IPAddress"] for n in (right, left)]
    hostname = run("exec", client, "hostname").stdout.strip()
    hosts = run("exec", client, "cat", "/etc/hosts").stdout         # named by both addresses, as Docker's
    assert [line.split()[0] for line in hosts.splitlines() if line.split()[1:] == [hostname]] == mine, hosts
    assert run("network", "disconnect", left, client).returncode == 0
    assert "eth1" not in run("exec", client, "ip", "-o", "link").stdout
    hosts = run("exec", client, "cat", "/etc/hosts").stdout
    assert [line.split()[0] for line in hosts.splitlines() if line.split()[1:] == [hostname]] == mine[:1], hosts
    assert fetch(run, client, url, timeout=1).returncode != 0
    p = run("network", "disconnect", left, client)
    assert p.returncode == 125 and "is not connected" in p.stderr


# --- addresses -------------------------------------------------------------------------------

def test_ipam_gives_20_parallel_runs_20_addresses(run, networks):
    net = networks("ipam", "--subnet", "10.213.0.0/24", "--ip-range", "10.213.0.32/27")
    tag = f"ipam-{os.getpid()}"
    procs = [subprocess.Popen([sys.executable, "-m", "labtool", "run", "-d", "--name", f"{tag}-{i}", "--network",
                               net, "busybox", "sleep", "60"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(20)]
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        found = json.loads(run("network", "inspect", net).stdout)[0]["Containers"]
        addresses = [e["IPv4Address"] for e in found.values()]
        assert len(addresses) == 20 and len(set(addresses)) == 20
        assert all(ipaddress.ip_interface(a).ip in ipaddress.ip_network("10.213.0.32/27") for a in addresses)
    finally:
        run("rm", "-f", *[f"{tag}-{i}" for i in range(20)], timeout=120)
    assert json.loads(run("network", "inspect", net).stdout)[0]["Containers"] == {}    # all given back


# --- errors and cleanup ----------------------------------------------------------------------

def _host_objects():
    from labtool.network import naming, publish

    links = sorted(n for n in os.listdir("/sys/class/net") if naming.is_ours(n))
    return links, publish.listed(), sorted(os.listdir(os.path.join(os.environ["LABTOOL_ROOT"], "lib", "networks")))


@pytest.mark.parametrize("flags, message", [
    (["--subnet", "10.0.0.0/33"], "invalid CIDR address: 10.0.0.0/33"),
    (["--subnet", "nonsense"], "invalid CIDR address: nonsense"),
    (["--subnet", "10.1.2.3/16"], "host bits are set"),
    (["--subnet", "127.0.0.0/8"], "overlaps 127.0.0.0/8, loopback"),
    (["--subnet", "224.0.0.0/24"], "overlaps 224.0.0.0/4, multicast"),
    (["--subnet", "0.0.0.0/0"], "overlaps 0.0.0.0/8"),
    (["--subnet", "10.77.0.0/24", "--gateway", "10.78.0.1"], "no matching subnet for gateway"),
])
def test_bad_networks_are_one_line_and_make_nothing(run, flags, message):
    run("network", "ls")
    before = _host_objects()
    p = run("network", "create", *flags, f"bad-{os.getpid()}")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr
    assert _host_objects() == before


def test_the_slides_network_create_with_ipam_driver(run, networks):
    """The slide's command as written: --driver=bridge --ipam-driver=default --subnet=... (a learner copies it)."""
    net = networks("stress-test", "--driver=bridge", "--ipam-driver=default", "--subnet=172.32.0.0/12")
    assert json.loads(run("network", "inspect", net).stdout)[0]["IPAM"]["Config"][0]["Subnet"] == "172.32.0.0/12"
    p = run("network", "create", "--ipam-driver", "other", f"other-{os.getpid()}")
    assert p.returncode == 125 and p.stderr.count("\n") == 1 and "invalid choice: 'other'" in p.stderr


def test_overlapping_subnets_and_unknown_networks(run, networks):
    net = networks("taken", "--subnet", "10.214.0.0/24")
    before = _host_objects()
    p = run("network", "create", "--subnet", "10.214.0.128/25", f"clash-{os.getpid()}")
    assert p.returncode == 125 and f"overlaps network {net}" in p.stderr
    host = [line.split()[0] for line in subprocess.run(["ip", "-4", "route"], capture_output=True,
                                                        text=True).stdout.splitlines()
            if not line.startswith("default") and " lt" not in line]
    if host:
        p = run("network", "create", "--subnet", host[0], f"clash-{os.getpid()}")
        assert p.returncode == 125 and "the host's route" in p.stderr, p.stderr
    p = run("run", "--rm", "--network", "no-such-net", "busybox", "true")
    assert p.returncode == 125 and p.stderr == "labtool: network no-such-net not found\n"
    p = run("network", "rm", "bridge")
    assert p.returncode == 1 and p.stderr == "labtool: bridge is a pre-defined network and cannot be removed\n"
    assert _host_objects() == before


def test_everything_is_gone_after_rm_and_network_rm(run, names):
    from labtool.network import naming, publish

    net = f"gone-{os.getpid()}"
    assert run("network", "create", "-o", "icc=false", net).returncode == 0
    bridge = json.loads(run("network", "inspect", net).stdout)[0]["Options"]["com.docker.network.bridge.name"]
    web = names("gone")
    detached(run, web, "--network", net, "-p", "127.0.0.1::80")
    veth = [n for n in os.listdir("/sys/class/net") if n.startswith(f"ltv{naming.tag()}-")]
    assert veth and bridge in os.listdir("/sys/class/net")
    ip = address(run, web)
    assert [line for line in publish.listed() if f"--to-destination {ip}:80" in line]
    assert run("rm", "-f", web).returncode == 0
    assert run("network", "rm", net).returncode == 0
    time.sleep(0.2)
    left = [n for n in os.listdir("/sys/class/net") if n == bridge or n in veth]
    assert not left
    assert not [line for line in publish.listed() if bridge in line or f"{ip}:80" in line]


def test_a_published_port_is_exposed_for_links(run, names):
    """-p 80 exposes 80 as Docker does: a link to the container announces it in its env."""
    web = names("pub-web")
    detached(run, web, "-p", "80")
    p = run("run", "--rm", "--link", f"{web}:web", "busybox", "sh", "-c", "echo $WEB_PORT_80_TCP_PORT")
    assert p.stdout == "80\n", p.stderr


def test_publish_all_and_exposed_ports_in_ps(run, names):
    web = names("all")
    detached(run, web, "-P", "--expose", "80", "--expose", "9000/udp")
    lines = run("port", web).stdout.splitlines()
    assert [line.split(" -> ")[0] for line in lines] == ["80/tcp", "9000/udp"]
    tcp_port = lines[0].split(":")[1]
    assert f"0.0.0.0:{tcp_port}->80/tcp" in run("ps", "-f", f"name={web}").stdout
    wait_for_http(run, web, "http://127.0.0.1/hostname")
    body = urllib.request.urlopen(f"http://127.0.0.1:{tcp_port}/hostname", timeout=5).read().decode()
    assert body.strip() == inspect(run, web)["Id"][:12]
    p = run("port", web, "443")
    assert p.returncode == 125 and "No public port '443/tcp' published" in p.stderr


def test_prune_removes_only_unused_networks(run, names):
    used, unused = f"used-{os.getpid()}", f"unused-{os.getpid()}"
    for net in (used, unused):
        assert run("network", "create", net).returncode == 0
    c = names("user")
    try:
        assert run("create", "--name", c, "--network", used, "busybox", "true").returncode == 0
        p = run("network", "prune", "-f")
        assert unused in p.stdout.split() and used not in p.stdout.split()
        listed = set(run("network", "ls").stdout.split())
        assert {used, "bridge", "host", "none"} <= listed and unused not in listed
    finally:
        run("rm", "-f", c)
        run("network", "rm", used, unused)
