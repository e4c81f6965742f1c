"""``--link NAME[:ALIAS]``: the old way for containers on the default bridge to find each other.

Slides, "Containers Linking": a link

  * sets environment variables describing the target container's endpoint (env sharing),
  * adds the link alias to the container's ``/etc/hosts`` (the "DNS override list"),
  * and, when inter-container communication is off (``icc=false``), opens exactly the
    target's EXPOSEd ports in the firewall (``publish.allow_link`` does that part).

"Links are deprecated: use user-defined bridges instead", where an embedded DNS server
(``dns.py``) answers names and no environment is shared. Everything here is pure: it turns
what is known about the target container into the lines Docker would write. Docker builds the
same variables in its daemon (``daemon/links``); the names below are Docker's, spelled out::

    docker run -d --name db -e POSTGRES_DB=app --expose 5432 postgres
    docker run --link db:pg busybox env
      PG_PORT=tcp://172.17.0.2:5432            the lowest exposed port (tcp first)
      PG_PORT_5432_TCP=tcp://172.17.0.2:5432   one group of four for every exposed port
      PG_PORT_5432_TCP_ADDR=172.17.0.2
      PG_PORT_5432_TCP_PORT=5432
      PG_PORT_5432_TCP_PROTO=tcp
      PG_NAME=/reader/pg                       /<linking container>/<alias>
      PG_ENV_POSTGRES_DB=app                   the target's own environment (not HOME, PATH)

Consecutive ports of one protocol (a range) also get ``..._START``, ``..._PORT_START``,
``..._END`` and ``..._PORT_END``. The alias is upper-cased with ``-`` turned into ``_`` (an
environment name cannot hold ``-``; see ``man 7 environ``).

The ``/etc/hosts`` line (format: ``man 5 hosts``) is ``IP<TAB>ALIAS HOSTNAME [NAME]``: the
target is reachable by its alias, its hostname, and by its name when that differs from the alias.

API
---
``Link(name, alias)``                          a parsed ``--link``
``parse_link(text) -> Link``                   ``"db"`` or ``"db:pg"``; ``UsageError`` if malformed
``link_env(alias, parent_name, ip, exposed=(), env=()) -> [str]``
    the "KEY=VALUE" list Docker sets in the linking container; ``exposed`` are EXPOSE entries
    ("80", "80/tcp", "53/udp"), ``env`` the target's "KEY=VALUE" list
``hosts_line(alias, ip, hostname, name) -> str``  one ``/etc/hosts`` line
``link_ports(exposed) -> [(port, proto)]``       the ports ``publish.allow_link`` opens under icc=false
"""

from dataclasses import dataclass

from labtool.errors import UsageError
from labtool.network.ports import parse_exposed


@dataclass
class Link:
    """One ``--link``: the target container's ``name`` and the ``alias`` it is known by."""

    name: str
    alias: str


def parse_link(text):
    """``--link db`` -> Link("db", "db"); ``--link db:pg`` -> Link("db", "pg")."""
    parts = text.split(":")
    if len(parts) > 2 or not all(parts):
        raise UsageError(f"invalid link format: {text} (use --link NAME[:ALIAS])")
    name = parts[0].lstrip("/")
    alias = parts[1].lstrip("/") if len(parts) == 2 else name
    if not name or not alias:
        raise UsageError(f"invalid link format: {text} (use --link NAME[:ALIAS])")
    return Link(name, alias)


def link_ports(exposed):
    """The target's EXPOSEd ports as Docker orders them: by number, tcp before udp on a tie."""
    return sorted({parse_exposed(e) for e in exposed}, key=lambda pp: (pp[0], pp[1] != "tcp"))


def env_prefix(alias):
    """``my-db`` -> ``MY_DB``: the stem of every variable of this link."""
    return alias.upper().replace("-", "_")


def link_env(alias, parent_name, ip, exposed=(), env=()):
    """The environment variables a ``--link`` adds to the linking container, in Docker's order."""
    prefix = env_prefix(alias)
    ports = link_ports(exposed)
    out = []
    start = end = None
    for i, (port, proto) in enumerate(ports):
        if i == 0:
            out.append(f"{prefix}_PORT={proto}://{ip}:{port}")
            start = end = (port, proto)
        stem = f"{prefix}_PORT_{port}_{proto.upper()}"
        out += [f"{stem}={proto}://{ip}:{port}", f"{stem}_ADDR={ip}", f"{stem}_PORT={port}",
                f"{stem}_PROTO={proto}"]
        if i > 0 and port == end[0] + 1 and proto == start[1]:
            end = (port, proto)                  # still inside a range of consecutive ports
            if i < len(ports) - 1:
                continue
        if end != start:                         # a range ended: describe it as a whole too
            stem = f"{prefix}_PORT_{start[0]}_{start[1].upper()}"
            out += [f"{stem}_START={start[1]}://{ip}:{start[0]}", f"{stem}_PORT_START={start[0]}",
                    f"{stem}_END={end[1]}://{ip}:{end[0]}", f"{stem}_PORT_END={end[0]}"]
        start = end = (port, proto)
    out.append(f"{prefix}_NAME=/{parent_name}/{alias}")
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key not in ("HOME", "PATH"):   # build-time noise, as Docker skips them
            out.append(f"{prefix}_ENV_{key}={value}")
    return out


def hosts_line(alias, ip, hostname, name):
    """``172.17.0.2\\tpg 1a2b3c4d5e6f db``: alias, the target's hostname, and its name if different."""
    names = [alias, hostname] + ([name] if name != alias else [])
    return f"{ip}\t{' '.join(n for i, n in enumerate(names) if n and n not in names[:i])}"
