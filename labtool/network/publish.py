"""Firewall and NAT for labtool's bridges: published ports, ICC, links, isolation (iptables).

Docker programs the kernel's netfilter (``man 8 iptables``, ``man 8 iptables-extensions``)
so that packets for a published host port are rewritten to the container's address, and
so that bridges are kept apart. labtool does the same, in chains of its own only: it never
flushes or edits a chain it did not create, so it can live next to Docker, libvirt or a
firewall. ``iptables`` here is the nf_tables flavour (``iptables -V``: "nf_tables"); rules
written with it show up in ``nft list ruleset`` too.

Chains (one set per labtool root, so that the tests, helpers and a lecturer can run several
roots side by side: ``LABTOOL-DNAT`` for /var/lib/labtool, ``LABTOOL-1a2b3c-DNAT`` for the
root ``LABTOOL_ROOT`` whose sha256 starts with 1a2b3c)::

    nat    PREROUTING  -m addrtype --dst-type LOCAL -j LABTOOL-DNAT   packets from outside and from containers
    nat    OUTPUT      -m addrtype --dst-type LOCAL -j LABTOOL-DNAT   what the host itself sends (curl 127.0.0.1:8080)
    nat    POSTROUTING -j LABTOOL-POST                                 source rewriting (MASQUERADE)
    filter FORWARD     -j LABTOOL-FWD   (inserted first: Docker may set the FORWARD policy to DROP)
           LABTOOL-FWD  -j LABTOOL-ICC                                  same-bridge traffic: icc and links
           LABTOOL-ICC  per icc=false bridge: link ACCEPTs and DNAT'd ACCEPT first, then -i BR -o BR -j DROP
           LABTOOL-FWD  per bridge: replies and published ports in, its own traffic out
           LABTOOL-ISO  per bridge: -o BRIDGE -j DROP (no traffic from one labtool bridge to another)

Publishing ``-p 127.0.0.1:8080:80`` of a container 172.18.0.2 on bridge lt0 takes three things
(each one, removed, broke it on this machine; see FACTS.md):

  1. ``-A LABTOOL-DNAT -d 127.0.0.1 -p tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:80``
     in both PREROUTING and OUTPUT, only for destinations that are the host's own addresses
     (``addrtype --dst-type LOCAL``);
  2. ``net.ipv4.conf.lt0.route_localnet=1``: the kernel otherwise refuses to route a packet
     with a 127.x source out of a real interface ("martian");
  3. ``-A LABTOOL-POST -s 127.0.0.0/8 -o lt0 -j MASQUERADE``: the container cannot answer to
     127.0.0.1 (that is its own loopback), so the source becomes the bridge's address.

What was measured here, and decided from it (a throw-away netns with its own bridge):

  * Filtering traffic *inside* a bridge (icc=false) needs the bridge to hand its frames to
    iptables (br_netfilter). The global switch ``net.bridge.bridge-nf-call-iptables`` is 1 on
    this machine, but it applies to every bridge of the host (libvirt's, Docker's). labtool
    does not touch it: it sets the per-bridge option ``nf_call_iptables`` (``ip -d link show``,
    netlink IFLA_BR_NF_CALL_IPTABLES) on its own bridges only. With the global switch 0 and
    the bridge's option 1, ``-i br -o br -j DROP`` blocked a ping between two ports; with both 0
    it did not.
  * A peer container reaching a published port through the host's address (A -> host:8080 ->
    B on the same bridge) also needs it: B's reply is bridged straight to A and must pass
    conntrack to get its source rewritten back. Without it the request timed out.
  * That peer traffic is *routed* by the host: ``net.ipv4.conf.BRIDGE.forwarding=1`` on the
    bridge alone was enough (the global ``net.ipv4.ip_forward`` stays as it is, 0 here).
    Host-wide ``ip_forward`` is only needed for traffic to the outside world.
  * A container reaching its *own* published port via the host needs hairpin mode on its
    bridge port (``set_hairpin``) and a MASQUERADE of its own address.

API (every function runs as root; the caller is a plain process, never a Jupyter kernel)
---
``chain(kind) -> str``                "LABTOOL[-tag]-" + kind, kind in DNAT POST FWD ICC ISO (tag:
    ``naming.root_tag6()``, "" for /var/lib/labtool, else 6 hex digits of the root)
``chain_tag(name) -> str | None``     the root tag a chain name belongs to (None: not labtool's)
``ensure_chains()``                   create this root's chains and jumps (idempotent)
``add_bridge(bridge, subnet, icc=True)``   a bridge's own rules and settings (route_localnet,
    forwarding, nf_call_iptables, loopback and outbound MASQUERADE, FORWARD accepts, isolation)
``remove_bridge(bridge)``             its rules; the chains go when nothing is left in them
``set_hairpin(ifname, on=True)``      hairpin mode on a bridge port (a container's host-side veth)
``publish(owner_id, bridge, container_ip, bindings) -> [PortBinding]``
    DNAT each ``ports.PortBinding``; host_port 0 gets a random free port; a host port held by
    a host process or any labtool container -> ``LabtoolError("Bind for 0.0.0.0:8080 failed:
    port is already allocated")`` and nothing is added
``unpublish(owner_id)``               every rule tagged with this owner (ports and links)
``set_icc(bridge, enabled)``          icc=false: DROP traffic between two ports of the bridge
``allow_link(owner_id, bridge, src_ip, dst_ip, ports)``   open ``[(80, "tcp"), ...]`` from src
    to dst (and the replies) under icc=false, as Docker's links do
``published_ports() -> set of (proto, host_ip, host_port)``  DNATs of every labtool root
``listed() -> [str]``                 this root's lines of ``iptables-save`` (chains, rules, jumps)
``remove_all()``                      this root's chains and jumps, for ``labtool reset``
"""

import os
import re
import shlex
import subprocess

from labtool import explain, paths
from labtool.errors import LabtoolError
from labtool.network import naming
from labtool.network import ports as portlib

KINDS = ("DNAT", "POST", "FWD", "ICC", "ISO")
TABLE = {"DNAT": "nat", "POST": "nat", "FWD": "filter", "ICC": "filter", "ISO": "filter"}
CHAIN_RE = re.compile(r"\bLABTOOL(?:-([0-9a-f]{6}))?-(DNAT|POST|FWD|ICC|ISO)\b")


# --- names -------------------------------------------------------------------------------------

def chain(kind):
    tag = naming.root_tag6()
    return f"LABTOOL-{tag}-{kind}" if tag else f"LABTOOL-{kind}"


def chain_tag(name):
    """The root tag of a labtool chain name ("" = default root), or None for any other name."""
    m = CHAIN_RE.fullmatch(name)
    return None if not m else (m.group(1) or "")


def _jumps():
    """(table, builtin chain, rule) of the jumps into this root's chains."""
    local = ["-m", "addrtype", "--dst-type", "LOCAL"]
    return [("nat", "PREROUTING", local + ["-j", chain("DNAT")]),
            ("nat", "OUTPUT", local + ["-j", chain("DNAT")]),
            ("nat", "POSTROUTING", ["-j", chain("POST")]),
            ("filter", "FORWARD", ["-j", chain("FWD")])]


def _comment(owner):
    return ["-m", "comment", "--comment", f"labtool:{owner}"]


# --- running iptables ----------------------------------------------------------------------------

def _iptables(table, *args, check=True, why=""):
    """Run ``iptables -w -t TABLE ARGS`` (``-w``: wait for the xtables lock, not fail)."""
    argv = ["iptables", "-w", "-t", table, *args]
    if args and args[0] in ("-A", "-I", "-D", "-N", "-X", "-F"):
        explain.say("network", "iptables " + " ".join(shlex.quote(a) for a in argv[2:]), why)
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise LabtoolError(f"iptables {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def _rules(table, name):
    """The rules of one chain as argument lists (``iptables -S``, without the leading ``-A NAME``)."""
    p = _iptables(table, "-S", name, check=False)
    if p.returncode != 0:
        return None                                  # no such chain
    return [shlex.split(line)[2:] for line in p.stdout.splitlines() if line.startswith("-A ")]


def _has_rule(table, name, rule):
    return _iptables(table, "-C", name, *rule, check=False).returncode == 0


def _lock():
    return paths.locked(os.path.join(paths.run_dir(), "iptables.lock"))


def _sysctl(path, value, why):
    explain.say("network", f"write {value} > {path}", why)
    with open(path, "w") as f:
        f.write(str(value))


# --- chains --------------------------------------------------------------------------------------

def ensure_chains():
    """Create this root's chains and the jumps into them, once (idempotent)."""
    with _lock():
        _ensure_chains()


def _ensure_chains():
    for kind in KINDS:
        if _rules(TABLE[kind], chain(kind)) is None:
            _iptables(TABLE[kind], "-N", chain(kind), why="labtool's own chain: never touches anyone else's")
    fwd = _rules("filter", chain("FWD"))
    if ["-j", chain("ICC")] not in fwd:
        _iptables("filter", "-I", chain("FWD"), "1", "-j", chain("ICC"),
                  why="same-bridge traffic first meets the icc and link rules")
    for table, builtin, rule in _jumps():
        if not _has_rule(table, builtin, rule):
            # FORWARD: first, before a DROP policy's rules (Docker's); the nat jumps may go last
            where = ["-I", builtin, "1"] if builtin == "FORWARD" else ["-A", builtin]
            _iptables(table, *where, *rule, why=f"send {builtin} packets through labtool's chain")


def _empty():
    """True when no bridge, port or link rule is left in this root's chains."""
    for kind in KINDS:
        rules = _rules(TABLE[kind], chain(kind)) or []
        if any("--comment" in r for r in rules):
            return False
    return True


def _drop_chains():
    for table, builtin, rule in _jumps():
        while _has_rule(table, builtin, rule):
            _iptables(table, "-D", builtin, *rule, why="no labtool rules left: the jump goes")
    for kind in KINDS:
        if _rules(TABLE[kind], chain(kind)) is not None:
            _iptables(TABLE[kind], "-F", chain(kind))
    for kind in KINDS:
        if _rules(TABLE[kind], chain(kind)) is not None:
            _iptables(TABLE[kind], "-X", chain(kind))


def _drop_chains_if_empty():
    if _empty():
        _drop_chains()


def _delete_tagged(owner):
    """Delete every rule in this root's chains whose comment is ``labtool:OWNER``."""
    tag = f"labtool:{owner}"
    for kind in KINDS:
        for rule in reversed(_rules(TABLE[kind], chain(kind)) or []):
            if "--comment" in rule and rule[rule.index("--comment") + 1] == tag:
                _iptables(TABLE[kind], "-D", chain(kind), *rule, why=f"remove the rules of {owner[:12]}")


def remove_all():
    """``labtool reset``: this root's chains and jumps, whatever is in them."""
    with _lock():
        _drop_chains()


def listed():
    """This root's lines of ``iptables-save``: chain declarations, their rules, the jumps to them."""
    found = []
    for table in ("nat", "filter"):
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if any(chain_tag(m.group(0)) == naming.root_tag6() for m in CHAIN_RE.finditer(line)):
                found.append(f"{table}: " + line.split(" [")[0])
    return found


# --- bridges -------------------------------------------------------------------------------------

def _bridge_option(bridge, **options):
    from pyroute2 import IPRoute          # pyroute2 is heavy: imported only when a bridge is set up

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=bridge)
        if not index:
            raise LabtoolError(f"no such bridge: {bridge}")
        ipr.link("set", index=index[0], kind="bridge", **options)


def set_hairpin(ifname, on=True):
    """Hairpin mode on one bridge port: a frame may leave by the port it came in (a container
    reaching its own published port through the host). ``bridge link set dev IF hairpin on``."""
    from pyroute2 import IPRoute

    explain.say("network", f"bridge link set dev {ifname} hairpin {'on' if on else 'off'}",
                "a container may reach its own published port via the host")
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)
        if not index:
            raise LabtoolError(f"no such link: {ifname}")
        ipr.brport("set", index=index[0], mode=1 if on else 0)


def add_bridge(bridge, subnet, icc=True):
    """The rules and settings of one labtool bridge (``subnet`` like "172.18.0.0/16")."""
    conf = f"/proc/sys/net/ipv4/conf/{bridge}"
    _sysctl(f"{conf}/route_localnet", 1, "let 127.0.0.1 reach the containers (published ports)")
    _sysctl(f"{conf}/forwarding", 1, "route packets that come in on this bridge (only this one)")
    explain.say("network", f"ip link set {bridge} type bridge nf_call_iptables 1",
                "this bridge's frames pass iptables (icc, replies to peers); other bridges untouched")
    _bridge_option(bridge, br_nf_call_iptables=1)
    owner = f"bridge:{bridge}"
    with _lock():
        _ensure_chains()
        _delete_tagged(owner)                       # idempotent: a second call does not double up
        _iptables("nat", "-A", chain("POST"), "-s", "127.0.0.0/8", "-o", bridge, "-j", "MASQUERADE",
                  *_comment(owner), why="the container answers the bridge's address, not its own loopback")
        _iptables("nat", "-A", chain("POST"), "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE",
                  *_comment(owner), why="containers go out with the host's address")
        _iptables("filter", "-I", chain("FWD"), "2", "-o", bridge, "-m", "conntrack", "--ctstate",
                  "RELATED,ESTABLISHED,DNAT", "-j", "ACCEPT", *_comment(owner),
                  why="into the bridge: replies, and published ports")
        _iptables("filter", "-A", chain("FWD"), "-i", bridge, "!", "-o", bridge, "-j", chain("ISO"),
                  *_comment(owner), why="leaving the bridge: not into another labtool bridge")
        _iptables("filter", "-A", chain("FWD"), "-i", bridge, "-j", "ACCEPT", *_comment(owner),
                  why="out of the bridge: to the world, and to its own containers")
        _iptables("filter", "-A", chain("ISO"), "-o", bridge, "-j", "DROP", *_comment(owner),
                  why="other labtool bridges cannot reach this one")
    if not icc:
        set_icc(bridge, False)


def remove_bridge(bridge):
    """Forget a bridge's rules (its icc rule too); the chains go when nothing is left."""
    with _lock():
        _delete_tagged(f"bridge:{bridge}")
        _delete_tagged(f"icc:{bridge}")
        _drop_chains_if_empty()


def set_icc(bridge, enabled):
    """Inter-container communication on one bridge. Off: its containers cannot talk to each other,
    except through published ports and the ports a link opens (Docker's ``icc=false``)."""
    owner = f"icc:{bridge}"
    drop = ["-i", bridge, "-o", bridge, "-j", "DROP", *_comment(owner)]
    published = ["-i", bridge, "-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT", *_comment(owner)]
    if not enabled:
        explain.say("network", f"ip link set {bridge} type bridge nf_call_iptables 1",
                    "bridged frames must pass iptables to be dropped")
        _bridge_option(bridge, br_nf_call_iptables=1)
    with _lock():
        _ensure_chains()
        has = _has_rule("filter", chain("ICC"), drop)
        if not enabled and not has:
            _iptables("filter", "-I", chain("ICC"), "1", *published,
                      why="published ports stay reachable from peers (through the host)")
            _iptables("filter", "-A", chain("ICC"), *drop, why="icc=false: no traffic between its containers")
        elif enabled and has:
            _delete_tagged(owner)
            explain.say("network", f"(rules of {owner} removed)", "icc=true: containers talk freely again")
            _drop_chains_if_empty()


def allow_link(owner_id, bridge, src_ip, dst_ip, ports):
    """A link from ``src_ip`` to ``dst_ip`` opens exactly ``ports`` ([(80, "tcp")]) under icc=false."""
    with _lock():
        _ensure_chains()
        for port, proto in ports:
            _iptables("filter", "-I", chain("ICC"), "1", "-i", bridge, "-o", bridge, "-s", src_ip,
                      "-d", dst_ip, "-p", proto, "--dport", str(port), "-j", "ACCEPT", *_comment(owner_id),
                      why=f"link: {src_ip} may open {port}/{proto} on {dst_ip}")
            _iptables("filter", "-I", chain("ICC"), "1", "-i", bridge, "-o", bridge, "-s", dst_ip,
                      "-d", src_ip, "-p", proto, "--sport", str(port), "-j", "ACCEPT", *_comment(owner_id),
                      why="and the replies come back")


# --- published ports -------------------------------------------------------------------------------

def published_ports():
    """(proto, host_ip, host_port) of every labtool DNAT on this host, of every root."""
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and words[0] == "-A" and chain_tag(words[1]) is not None and "DNAT" in words \
                and "--dport" in words:
            ip = words[words.index("-d") + 1].split("/")[0] if "-d" in words else ""
            found.add((words[words.index("-p") + 1], ip, int(words[words.index("--dport") + 1])))
    return found


def _clashes(taken, proto, ip, port):
    return any(p == proto and hp == port and (not ip or not hip or ip == hip) for p, hip, hp in taken)


def _already_allocated(b, port):
    return LabtoolError(f"Bind for {b.shown_ip}:{port} failed: port is already allocated")


def publish(owner_id, bridge, container_ip, bindings):
    """Forward each binding's host port to ``container_ip``; returns the bindings with their
    host ports chosen. All or nothing: a clash adds no rule at all."""
    for ip in sorted({b.host_ip for b in bindings if b.host_ip}):
        if not portlib.is_free(0, "tcp", ip):         # port 0: any port; fails only for the address
            raise LabtoolError(f"cannot publish on {ip}: bind: cannot assign requested address "
                               "(not an address of this host)")
    chosen = []
    with _lock():
        taken = published_ports()
        for b in bindings:
            if b.host_port:
                if _clashes(taken, b.protocol, b.host_ip, b.host_port) or \
                        not portlib.is_free(b.host_port, b.protocol, b.host_ip):
                    raise _already_allocated(b, b.host_port)
                port = b.host_port
            else:
                candidates = range(b.host_range[0], b.host_range[1] + 1) if b.host_range else None
                busy = {hp for p, hip, hp in taken if p == b.protocol}
                port = portlib.random_free_port(b.protocol, b.host_ip, busy, candidates)
            taken.add((b.protocol, b.host_ip, port))
            chosen.append(portlib.PortBinding(b.container_port, b.protocol, b.host_ip, port))
        if not chosen:
            return []
        _ensure_chains()
        try:
            for b in chosen:
                where = ["-d", b.host_ip] if b.host_ip else []
                _iptables("nat", "-A", chain("DNAT"), *where, "-p", b.protocol, "--dport", str(b.host_port),
                          "-j", "DNAT", "--to-destination", f"{container_ip}:{b.container_port}",
                          *_comment(owner_id),
                          why=f"host port {b.host_port} -> {container_ip}:{b.container_port}")
                _iptables("nat", "-A", chain("POST"), "-s", container_ip, "-d", container_ip, "-p", b.protocol,
                          "--dport", str(b.container_port), "-j", "MASQUERADE", *_comment(owner_id),
                          why="hairpin: the container may reach its own published port")
        except LabtoolError:
            _delete_tagged(owner_id)
            _drop_chains_if_empty()
            raise
    return chosen


def unpublish(owner_id):
    """Remove every rule of this owner (its published ports and its links)."""
    with _lock():
        _delete_tagged(owner_id)
        _drop_chains_if_empty()
