"""Who is who on a user-defined network: what the embedded DNS server (``dns.py``) answers.

Docker's rules, read live from the network store (so ``network connect`` / ``disconnect``
count at once):

- A container finds the containers that share a user-defined network with it, by their
  name, their first 12 id digits, their ``--network-alias`` / ``connect --alias``, and the
  ``--link`` aliases it gave them; the answer is their address *on that shared network*.
- On the default bridge nobody is found by name (that is what ``--link`` and /etc/hosts
  were for): ``resolve`` answers nothing there, and the DNS server forwards or refuses.
"""

from labtool.network import store


def resolve(container_id, qname):
    """IPv4 addresses (strings) that ``qname`` names for the container ``container_id``."""
    from labtool.engine import containers

    wanted = qname.rstrip(".").lower()
    if not wanted:
        return []
    mine = [n for n in store.all_networks() if container_id in n["Containers"] and n["Name"] != store.DEFAULT]
    link_aliases = _link_aliases(container_id)
    found = []
    for network in mine:
        for other_id, endpoint in network["Containers"].items():
            try:
                name = containers.load(other_id).name
            except OSError:
                name = endpoint.get("Name", "")
            names = {name.lower(), other_id[:12]} | {a.lower() for a in endpoint.get("Aliases") or []}
            names |= {alias for alias, target in link_aliases if target in (name.lower(), other_id[:12])}
            address = endpoint["IPv4Address"].split("/")[0]
            if wanted in names and address not in found:
                found.append(address)
    return found


def _link_aliases(container_id):
    """[(alias, target name)] of a container's --link flags (lower case)."""
    from labtool.engine import containers
    from labtool.network import links

    try:
        texts = containers.load(container_id).config.get("network", {}).get("links", [])
        return [(link.alias.lower(), link.name.lower()) for link in map(links.parse_link, texts)]
    except Exception:       # a container being removed: no aliases
        return []
