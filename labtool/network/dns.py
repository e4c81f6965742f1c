"""The embedded DNS resolver: containers on a user-defined network find each other by name.

Docker's model, which labtool follows: a container on a user-defined network gets

    nameserver 127.0.0.11
    options ndots:0

in its ``/etc/resolv.conf`` (``man 5 resolv.conf``). 127.0.0.11 is an address on the
container's *own* loopback, inside its own network namespace, and yet the answers come from
the engine: a socket bound to 127.0.0.11:53 in that namespace is read by a process in the
host's namespace. A socket belongs to the namespace it was *created* in
(``man 7 network_namespaces``), not to the process that reads it, so:

  1. ``attach(container_id, netns_path)`` forks a short-lived child, which joins the
     container's network namespace (``setns(fd, CLONE_NEWNET)``, ``man 2 setns``), creates a
     UDP socket and a TCP listener on 127.0.0.11:53 there, and hands both file descriptors
     back over a socketpair (SCM_RIGHTS, ``man 7 unix``), then exits. (The fork is what keeps
     setns out of the caller: a namespace switch is per thread, and only a single-threaded
     child is safe to switch.)
  2. The fds are handed the same way over the unix socket ``<run_dir>/dns.sock`` to the
     resolver process, one per labtool root, started on demand
     (``python -m labtool.network.dns serve``, pid in ``<run_dir>/dns.pid``).
  3. The resolver knows which container asks by which socket the query came in on. For an A
     query it calls ``resolve(container_id, name)`` (by default
     ``labtool.network.names.resolve``): the addresses of the containers and aliases that
     container can see on its networks. AAAA for a known name: NOERROR with no data (labtool
     is IPv4 only). Anything else is forwarded, as Docker does, to the nameservers of the
     host's ``/etc/resolv.conf`` (or the container's ``--dns`` servers); with none, REFUSED.
  4. ``detach(container_id)`` closes the container's sockets; with no container left the
     resolver exits. ``stop()`` ends it (``labtool reset``).

The DNS messages are read and written here with ``struct`` (RFC 1035 section 4): a 12-byte
header (id, flags, four counts), questions (name, type, class), resource records (name,
type, class, TTL, data). Names are length-prefixed labels; in a message a name may end with
a 2-byte *compression pointer* (top bits 11) to an earlier name (RFC 1035 4.1.4).

API
---
``EMBEDDED_IP = "127.0.0.11"``
``container_resolv_conf(search=(), options=()) -> str``   the resolv.conf of such a container
``host_upstreams(path="/etc/resolv.conf") -> [(ip, 53)]`` nameservers to forward to
``attach(container_id, netns_path, upstreams=None)``   sockets into that namespace; starts the
    resolver if needed; ``upstreams`` [(ip, port)] replaces the host's for this container (--dns)
``detach(container_id)``   ``stop()``   ``running() -> pid or 0``   ``attached() -> [ids]``
``serve(resolve=None, upstreams=None)``   the resolver's loop (the process runs it)
``query(server, name, qtype=A, port=53, tcp=False, timeout=2.0) -> Message``   a small client
Wire format: ``build_query(name, qtype=A, ident=None) -> bytes``, ``parse_message(data) -> Message``
(``.rcode``, ``.questions``, ``.answers`` of ``Record(name, type, klass, ttl, data)``,
``.addresses()``), ``respond(data, container_id, resolve) -> bytes | None`` (None: forward it; b"": drop it),
``error_reply(data, rcode) -> bytes``.
"""

import errno
import ipaddress
import json
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from labtool import explain, paths
from labtool.errors import LabtoolError

EMBEDDED_IP = "127.0.0.11"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)     # <linux/in.h>
TTL = 600                                 # seconds a client may cache our answers (Docker's value)

# RFC 1035 3.2.2 types, 3.2.4 class, 4.1.1 header codes
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA = 1, 2, 5, 6, 12, 15, 16, 28
IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080


class DNSFormatError(ValueError):
    """A message that does not follow RFC 1035."""


# --- the wire format (RFC 1035 section 4) ---------------------------------------------------

@dataclass
class Question:
    name: str
    type: int = A
    klass: int = IN


@dataclass
class Record:
    name: str
    type: int
    klass: int
    ttl: int
    data: bytes


@dataclass
class Message:
    id: int
    flags: int
    questions: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    authority: int = 0
    additional: int = 0
    question_end: int = 12           # where the question section ends in the original bytes

    @property
    def rcode(self):
        return self.flags & 0x000F

    @property
    def opcode(self):
        return (self.flags >> 11) & 0xF

    def addresses(self):
        """The IPv4 addresses of the A records in the answer section."""
        return [str(ipaddress.IPv4Address(r.data)) for r in self.answers if r.type == A and len(r.data) == 4]


def read_name(data, offset):
    """Read a domain name at ``offset``; follow compression pointers. Returns (name, offset after it)."""
    labels, end, jumps = [], None, 0
    while True:
        if offset >= len(data):
            raise DNSFormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:                     # a pointer: 14 bits of offset from the message start
            if offset + 1 >= len(data):
                raise DNSFormatError("truncated compression pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            if jumps > 64:
                raise DNSFormatError("compression pointers loop")
            continue
        if length & 0xC0:
            raise DNSFormatError(f"unknown label type {length:#x}")
        offset += 1
        if length == 0:
            break
        labels.append(data[offset:offset + length].decode("ascii", errors="replace"))
        offset += length
    name = ".".join(labels)
    if len(name) > 253:
        raise DNSFormatError("name longer than 255 octets")
    return name, (end if end is not None else offset)


def encode_name(name):
    """``web.example`` -> ``\\x03web\\x07example\\x00`` (no compression when we write)."""
    out = b""
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise DNSFormatError(f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse_message(data):
    """Parse a whole message: header, questions, answer records (authority/additional counted)."""
    if len(data) < 12:
        raise DNSFormatError("shorter than a DNS header")
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", data[:12])
    msg = Message(ident, flags, authority=ns, additional=ar)
    offset = 12
    for _ in range(qd):
        name, offset = read_name(data, offset)
        if offset + 4 > len(data):
            raise DNSFormatError("truncated question")
        qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
        offset += 4
        msg.questions.append(Question(name, qtype, qclass))
    msg.question_end = offset
    for _ in range(an):
        name, offset = read_name(data, offset)
        if offset + 10 > len(data):
            raise DNSFormatError("truncated resource record")
        rtype, rclass, ttl, rdlength = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        rdata = data[offset:offset + rdlength]
        if len(rdata) != rdlength:
            raise DNSFormatError("truncated record data")
        offset += rdlength
        msg.answers.append(Record(name, rtype, rclass, ttl, rdata))
    return msg


def build_query(name, qtype=A, ident=None):
    """A recursive query for one name (RD set, as a stub resolver sends it)."""
    ident = random.randrange(65536) if ident is None else ident
    return struct.pack("!HHHHHH", ident, RD, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, IN)


def _reply(query, msg, rcode, addresses=(), authoritative=False):
    """A response to ``query``: its id and question, our flags, and one A record per address.
    Each answer's name is a pointer (0xC00C) to the question's name at offset 12."""
    flags = QR | (msg.flags & (0x7800 | RD)) | RA | (AA if authoritative else 0) | rcode
    question = query[12:msg.question_end]
    answers = b"".join(struct.pack("!HHHIH", 0xC00C, A, IN, TTL, 4) + ipaddress.IPv4Address(ip).packed
                       for ip in addresses)
    return struct.pack("!HHHHHH", msg.id, flags, len(msg.questions), len(addresses), 0, 0) + question + answers


def error_reply(data, rcode):
    """An empty answer with ``rcode`` (SERVFAIL, REFUSED, ...) to the query ``data``."""
    try:
        msg = parse_message(data)
    except DNSFormatError:
        if len(data) < 12:
            return None                                   # not even a header: nothing to answer
        ident, flags = struct.unpack("!HH", data[:4])
        return struct.pack("!HHHHHH", ident, QR | (flags & (0x7800 | RD)) | RA | FORMERR, 0, 0, 0, 0)
    msg.questions = msg.questions[:1]
    end = 12 if not msg.questions else msg.question_end
    return _reply(data[:end], Message(msg.id, msg.flags, msg.questions, question_end=end), rcode)


def respond(data, container_id, resolve):
    """The answer to one query from ``container_id``, or None when it must be forwarded."""
    try:
        msg = parse_message(data)
    except DNSFormatError:
        return error_reply(data, FORMERR)
    if msg.flags & QR:
        return b""                                        # a response sent to us: drop it, say nothing
    if msg.opcode != 0 or len(msg.questions) != 1:
        return error_reply(data, NOTIMP if msg.opcode else FORMERR)
    q = msg.questions[0]
    if q.klass != IN or q.type not in (A, AAAA):
        return None
    name = q.name.lower().rstrip(".")
    addresses = list(resolve(container_id, name)) if name else []
    if not addresses:
        return None                                       # not one of ours: ask the upstream servers
    if q.type == AAAA:                                    # known, but IPv4 only: NOERROR, no data
        return _reply(data, msg, NOERROR, authoritative=True)
    return _reply(data, msg, NOERROR, addresses, authoritative=True)


# --- resolv.conf ---------------------------------------------------------------------------------

def container_resolv_conf(search=(), options=()):
    """The /etc/resolv.conf of a container on a user-defined network (Docker writes the same)."""
    lines = [f"nameserver {EMBEDDED_IP}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options " + " ".join(["ndots:0", *options]))
    return "\n".join(lines) + "\n"


def host_upstreams(path="/etc/resolv.conf"):
    """The IPv4 ``nameserver`` lines of a resolv.conf, as (ip, 53)."""
    found = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    try:
                        if ipaddress.ip_address(words[1]).version == 4:
                            found.append((words[1], 53))
                    except ValueError:
                        pass
    except OSError:
        pass
    return found


# --- the resolver process --------------------------------------------------------------------------

def _sock_path():
    return os.path.join(paths.run_dir(), "dns.sock")


def _pid_path():
    return os.path.join(paths.run_dir(), "dns.pid")


def _lock_path():
    return os.path.join(paths.run_dir(), "dns.lock")


def _default_resolve(container_id, name):
    from labtool.network import names         # net-core's: who this container can see by name

    return names.resolve(container_id, name)


class Resolver:
    """One process, every container of this labtool root: a select loop over their sockets."""

    FORWARD_TIMEOUT = 2.0

    def __init__(self, resolve=None, upstreams=None):
        self.resolve = resolve or _default_resolve
        self.upstreams = host_upstreams() if upstreams is None else list(upstreams)
        self.sel = selectors.DefaultSelector()
        self.containers = {}           # id -> {"udp": sock, "tcp": sock, "upstreams": [...] or None}
        self.pending = {}              # upstream socket -> forwarded query
        self.started = time.monotonic()
        self.done = False

    # control: attach / detach / list / stop over the unix socket
    def listen(self):
        os.makedirs(paths.run_dir(), mode=0o700, exist_ok=True)
        try:
            os.unlink(_sock_path())
        except FileNotFoundError:
            pass
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(_sock_path())
        os.chmod(_sock_path(), 0o600)
        self.control.listen(64)
        self.sel.register(self.control, selectors.EVENT_READ, ("control", None))
        with open(_pid_path(), "w") as f:
            f.write(f"{os.getpid()}\n")

    def on_control(self, conn):
        conn.settimeout(5)
        try:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 2)
            request = json.loads(data.decode() or "{}")
            op, cid = request.get("op"), request.get("id")
            if op == "attach" and len(fds) == 2:
                self.drop(cid)
                udp = socket.socket(fileno=fds[0])
                tcp = socket.socket(fileno=fds[1])
                for s in (udp, tcp):
                    s.setblocking(False)
                ups = request.get("upstreams")
                self.containers[cid] = {"udp": udp, "tcp": tcp, "netns": request.get("netns", ""),
                                        "upstreams": [tuple(u) for u in ups] if ups is not None else None}
                self.sel.register(udp, selectors.EVENT_READ, ("udp", cid))
                self.sel.register(tcp, selectors.EVENT_READ, ("tcp", cid))
                fds = []
                answer = {"ok": True}
            elif op == "detach":
                self.drop(cid)
                answer = {"ok": True}
            elif op == "list":
                answer = {"ok": True, "ids": sorted(self.containers),
                          "netns": {c: e["netns"] for c, e in self.containers.items()}}
            elif op == "stop":
                self.done = True
                answer = {"ok": True}
            else:
                answer = {"ok": False, "error": f"bad request {op!r}"}
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps(answer).encode())
        except (OSError, ValueError) as e:
            print(f"labtool dns: control: {e}", file=sys.stderr)
        finally:
            conn.close()

    def drop(self, cid):
        entry = self.containers.pop(cid, None)
        if entry:
            for s in (entry["udp"], entry["tcp"]):
                self.sel.unregister(s)
                s.close()

    # queries
    def answer(self, data, cid, reply):
        try:
            out = respond(data, cid, self.resolve)
        except Exception as e:                          # a resolve() that failed: say so, keep serving
            print(f"labtool dns: resolve failed: {e!r}", file=sys.stderr)
            out = error_reply(data, SERVFAIL)
        if out == b"":
            return
        if out is not None:
            reply(out)
            return
        entry = self.containers.get(cid)
        ups = entry["upstreams"] if entry and entry["upstreams"] is not None else self.upstreams
        if not ups:
            reply(error_reply(data, REFUSED))         # nobody to ask: refuse, as a closed resolver does
            return
        self.forward(data, list(ups), reply)

    def forward(self, data, ups, reply):
        """Send the query as it is to the first upstream; its answer goes back unchanged."""
        ip, port = ups.pop(0)
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.setblocking(False)
        try:
            up.connect((ip, port))        # a connected socket takes replies from that server only
            up.send(data)
        except OSError:
            up.close()
            if ups:
                return self.forward(data, ups, reply)
            reply(error_reply(data, SERVFAIL))
            return
        self.pending[up] = {"data": data, "rest": ups, "reply": reply,
                            "deadline": time.monotonic() + self.FORWARD_TIMEOUT}
        self.sel.register(up, selectors.EVENT_READ, ("upstream", None))

    def on_upstream(self, up):
        job = self.pending.pop(up)
        self.sel.unregister(up)
        try:
            data = up.recv(65535)
        except OSError:
            data = b""
        up.close()
        if len(data) >= 12 and data[:2] == job["data"][:2]:
            job["reply"](data)
        elif job["rest"]:
            self.forward(job["data"], job["rest"], job["reply"])
        else:
            job["reply"](error_reply(job["data"], SERVFAIL))

    def expire(self):
        now = time.monotonic()
        for up, job in list(self.pending.items()):
            if job["deadline"] < now:
                self.pending.pop(up)
                self.sel.unregister(up)
                up.close()
                if job["rest"]:
                    self.forward(job["data"], job["rest"], job["reply"])
                else:
                    job["reply"](error_reply(job["data"], SERVFAIL))

    def on_udp(self, sock, cid):
        try:
            data, addr = sock.recvfrom(65535)
        except OSError:
            return

        def reply(out):
            try:
                sock.sendto(out, addr)
            except OSError:
                pass
        self.answer(data, cid, reply)

    def on_tcp_accept(self, sock, cid):
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, ("tcpconn", [cid, b""]))

    def on_tcp_data(self, conn, state):
        """DNS over TCP (RFC 1035 4.2.2): each message is preceded by its 2-byte length."""
        try:
            chunk = conn.recv(65535)
        except OSError:
            chunk = b""
        if not chunk:
            self.sel.unregister(conn)
            conn.close()
            return
        state[1] += chunk
        while len(state[1]) >= 2:
            length = struct.unpack("!H", state[1][:2])[0]
            if len(state[1]) < 2 + length:
                break
            data, state[1] = state[1][2:2 + length], state[1][2 + length:]

            def reply(out, conn=conn):
                try:
                    conn.setblocking(True)
                    conn.sendall(struct.pack("!H", len(out)) + out)
                    conn.setblocking(False)
                except OSError:
                    pass
            self.answer(data, state[0], reply)

    # the loop, and leaving it
    def try_exit(self):
        """Leave when no container is attached. Under the attach lock, so that no client is
        between 'the resolver runs' and 'it has my sockets'; never wait for it (a client holding
        it waits for us)."""
        import fcntl

        fd = os.open(_lock_path(), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.control.setblocking(False)
        try:
            conn, _ = self.control.accept()            # a request still queued: serve it, stay
        except BlockingIOError:
            conn = None
        self.control.setblocking(True)
        if conn is not None:
            self.on_control(conn)
            os.close(fd)
            return False
        if self.containers and not self.done:
            os.close(fd)
            return False
        for path in (_sock_path(), _pid_path()):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.close(fd)
        return True

    def run(self):
        self.listen()
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "done", True))
        while True:
            for key, _ in self.sel.select(timeout=0.2):
                kind, arg = key.data
                if kind == "control":
                    try:
                        conn, _ = self.control.accept()
                    except OSError:
                        continue
                    self.on_control(conn)
                elif kind == "udp":
                    self.on_udp(key.fileobj, arg)
                elif kind == "tcp":
                    self.on_tcp_accept(key.fileobj, arg)
                elif kind == "tcpconn":
                    self.on_tcp_data(key.fileobj, arg)
                elif kind == "upstream" and key.fileobj in self.pending:
                    self.on_upstream(key.fileobj)
            self.expire()
            idle = not self.containers and time.monotonic() - self.started > 1.0
            if (self.done or idle) and self.try_exit():
                for cid in list(self.containers):
                    self.drop(cid)
                self.control.close()
                return


def serve(resolve=None, upstreams=None):
    """Run the resolver of this labtool root until no container is left (or ``stop()``)."""
    Resolver(resolve, upstreams).run()


# --- the host side: attach, detach, stop -------------------------------------------------------------

def running():
    """The resolver's pid, or 0."""
    try:
        with open(_pid_path()) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read()
            if b"labtool" not in argv or b"dns" not in argv:       # a reused pid, not our resolver
                return 0
        return pid
    except (OSError, ValueError):
        return 0


def _request(request, fds=()):
    """Send one request (and file descriptors) to the resolver; its answer as a dict."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(_sock_path())
        socket.send_fds(s, [json.dumps(request).encode()], list(fds))
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return json.loads(answer.decode() or '{"ok": false, "error": "no answer"}')


def _start():
    """Start the resolver of this root in the background (its own session, output to dns.log)."""
    os.makedirs(paths.run_dir(), mode=0o700, exist_ok=True)
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = top + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    explain.say("network", "start the DNS resolver: python -m labtool.network.dns serve",
                "one per labtool root, answers 127.0.0.11 in every attached container")
    with open(os.path.join(paths.run_dir(), "dns.log"), "ab") as log:
        subprocess.Popen([sys.executable, "-m", "labtool.network.dns", "serve"], cwd="/", env=env,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        if running() and os.path.exists(_sock_path()):
            return
        time.sleep(0.02)
    raise LabtoolError("the DNS resolver did not start (see dns.log in labtool's run directory)")


def _sockets_in(netns_path):
    """Create the UDP socket and TCP listener on 127.0.0.11:53 inside ``netns_path``, in a forked
    child (setns changes the calling thread's namespace: never do it in the caller)."""
    from labtool import syscalls

    explain.say("network", f"fork; setns({netns_path}, CLONE_NEWNET); bind {EMBEDDED_IP}:53 udp+tcp",
                "the resolver's sockets live in the container's own network namespace")
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:                                   # the child: join, bind, hand over, exit
        code = 0
        try:
            parent.close()
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for s in (udp, tcp):
                # IP_FREEBIND (man 7 ip): bind even while the container's lo is still down and
                # 127.0.0.11 not yet one of its addresses; packets arrive once lo is up
                s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                s.bind((EMBEDDED_IP, 53))
            tcp.listen(64)
            socket.send_fds(child, [b"ok"], [udp.fileno(), tcp.fileno()])
        except BaseException as e:                 # noqa: BLE001 - everything goes back to the parent
            hint = " (no loopback address there?)" if getattr(e, "errno", None) == errno.EADDRNOTAVAIL else ""
            try:
                child.sendall(f"error: {e}{hint}".encode())
            except OSError:
                pass
            code = 1
        finally:
            os._exit(code)
    child.close()
    try:
        msg, fds, _, _ = socket.recv_fds(parent, 4096, 2)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if msg != b"ok" or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise LabtoolError(f"cannot listen on {EMBEDDED_IP}:53 in {netns_path}: {msg.decode(errors='replace')}")
    return fds


def _netns_id(netns_path):
    """A network namespace is a file on nsfs: its (device, inode) names it (``man 7 namespaces``)."""
    st = os.stat(netns_path)
    return f"{st.st_dev}:{st.st_ino}"


def attach(container_id, netns_path, upstreams=None):
    """Serve DNS at 127.0.0.11 inside this container's network namespace (starts the resolver).
    Idempotent: a container already served in this namespace is left as it is (connecting it
    to a second network changes only what ``resolve`` answers); in another namespace (it was
    restarted) its old sockets are dropped first."""
    try:
        netns = _netns_id(netns_path)
    except OSError as e:
        raise LabtoolError(f"cannot listen on {EMBEDDED_IP}:53 in {netns_path}: {e.strerror}") from None
    with paths.locked(_lock_path()):           # (held: the resolver cannot leave meanwhile)
        if running() and os.path.exists(_sock_path()):
            served = _request({"op": "list"}).get("netns", {})
            if served.get(container_id) == netns:
                return
            if container_id in served:
                _request({"op": "detach", "id": container_id})
        fds = _sockets_in(netns_path)
        try:
            if not running() or not os.path.exists(_sock_path()):
                _start()
            answer = _request({"op": "attach", "id": container_id, "netns": netns,
                               "upstreams": [list(u) for u in upstreams] if upstreams is not None else None}, fds)
        finally:
            for fd in fds:
                os.close(fd)
    if not answer.get("ok"):
        raise LabtoolError(f"the DNS resolver refused {container_id[:12]}: {answer.get('error')}")


def detach(container_id):
    """Close this container's DNS sockets; the resolver leaves when it has no container left."""
    if running():
        try:
            _request({"op": "detach", "id": container_id})
        except OSError:
            pass


def attached():
    """The ids of the containers the resolver serves now."""
    if not running():
        return []
    try:
        return _request({"op": "list"}).get("ids", [])
    except OSError:
        return []


def stop(timeout=5.0):
    """End the resolver (``labtool reset``): politely, then with SIGKILL."""
    pid = running()
    if not pid:
        return False
    try:
        _request({"op": "stop"})
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and os.path.exists(f"/proc/{pid}") and running():
        time.sleep(0.02)
    if running():
        os.kill(pid, signal.SIGKILL)
        for path in (_sock_path(), _pid_path()):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return True


# --- a small client -----------------------------------------------------------------------------------

def query(server, name, qtype=A, port=53, tcp=False, timeout=2.0):
    """Ask ``server`` about ``name``; the parsed answer (``.addresses()``, ``.rcode``)."""
    data = build_query(name, qtype)
    if tcp:
        with socket.create_connection((server, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            raw = b""
            while len(raw) < 2 or len(raw) < 2 + struct.unpack("!H", raw[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    break
                raw += chunk
            return parse_message(raw[2:])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (server, port))
        while True:
            raw, _ = s.recvfrom(65535)
            if raw[:2] == data[:2]:
                return parse_message(raw)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        sys.exit("usage: python -m labtool.network.dns serve")
