"""A container's /etc/hosts and /etc/resolv.conf, as Docker writes them (man 5 hosts, man 5 resolv.conf).

labtool writes both into the container's directory; step 01 binds them over the image's
files (``rootfs.bind_etc_files``). A bind mount of a file follows its inode, so a file is
rewritten in place (never replaced by a new one): ``network connect`` changes it live.

    /etc/hosts        localhost, --add-host lines, --link lines (ALIAS -> the linked
                      container's address), and the container's own address and hostname
    /etc/resolv.conf  on a user-defined network: ``nameserver 127.0.0.11``, the embedded
                      DNS server that knows the other containers by name; on the default
                      bridge: --dns, else the host's nameservers (not a 127.x one: the
                      host's loopback is not the container's)
"""

import os

from labtool.errors import UsageError

EMBEDDED_DNS = "127.0.0.11"

LOCALHOST = ("127.0.0.1\tlocalhost\n"
             "::1\tlocalhost ip6-localhost ip6-loopback\n"
             "fe00::0\tip6-localnet\n"
             "ff00::0\tip6-mcastprefix\n"
             "ff02::1\tip6-allnodes\n"
             "ff02::2\tip6-allrouters\n")


def parse_add_host(text):
    """``--add-host NAME:IP`` (or NAME=IP) -> (name, ip); ip may be ``host-gateway``."""
    name, sep, ip = text.partition("=") if "=" in text else text.partition(":")
    if not sep or not name or not ip:
        raise UsageError(f'invalid argument "{text}" for "--add-host" flag: bad format for add-host: "{text}"')
    if ip != "host-gateway":
        import ipaddress

        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise UsageError(f'invalid argument "{text}" for "--add-host" flag: invalid IP address in add-host: '
                             f'"{ip}"') from None
    return name, ip.strip("[]")


def parse_dns(text):
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f'invalid argument "{text}" for "--dns" flag: {text} is not an ip address') from None


def hosts_text(hostname, addresses, extra=(), link_lines=()):
    """The whole /etc/hosts. ``addresses``: the container's own (none: 127.0.1.1 names it)."""
    lines = [LOCALHOST]
    lines += [f"{ip}\t{name}\n" for name, ip in extra]
    lines += [line if line.endswith("\n") else line + "\n" for line in link_lines]
    for ip in addresses or ["127.0.1.1"]:
        lines.append(f"{ip}\t{hostname}\n")
    return "".join(lines)


def host_nameservers():
    try:
        with open("/etc/resolv.conf") as f:
            lines = f.read().splitlines()
    except OSError:
        return [], []
    servers = [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
    search = [w for line in lines if line.startswith("search") for w in line.split()[1:]]
    return [s for s in servers if not s.startswith("127.")], search


def resolv_text(embedded, dns=()):
    """The whole /etc/resolv.conf."""
    servers, search = host_nameservers()
    if embedded:
        servers = [EMBEDDED_DNS]            # it forwards the rest to --dns or the host's
    elif dns:
        servers = list(dns)
    lines = [f"search {' '.join(search)}\n"] if search else []
    lines += [f"nameserver {s}\n" for s in servers]
    if embedded:
        lines.append("options ndots:0\n")
    return "".join(lines)


def name_own_address(path, address, hostname, named=True):
    """``network connect`` and ``disconnect`` of a running container: its /etc/hosts gains (or
    loses) the line that names it by its address on that network, as Docker's does."""
    line = f"{address}\t{hostname}\n"
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    kept = [x for x in lines if x != line]
    write_in_place(path, "".join(kept + ([line] if named else [])))


def write_in_place(path, text):
    """Rewrite a file keeping its inode (a bind mount of it shows the new text at once)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    finally:
        os.close(fd)
