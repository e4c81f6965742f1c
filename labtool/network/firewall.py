"""What the network step asks of the firewall (``publish.py`` holds the iptables rules).

One place where the step's events meet publish.py's functions:

    container_started      publish its ports (DNAT), open its links (icc=false)
    container_connected    (a live ``network connect``) the same for one more network
    container_stopped      remove every rule of the container
    network_removed        remove the rules of a network's bridge
    reset                  remove labtool's chains of this root
"""

from labtool.errors import LabtoolError


def published_ports():
    """Host ports that running containers of this root publish (so that two never take one)."""
    from labtool.engine import containers

    found = set()
    for record in containers.all_records():
        if record.running_pid:
            found |= {int(p["HostPort"]) for p in record.state.get("Ports", [])}
    return found


def check_port_free(binding, container_id):
    """A clear error when ``binding``'s host port is taken (a listening socket or another container)."""
    from labtool.network import ports

    if binding.host_port in published_ports() or not ports.is_free(binding.host_port, binding.protocol,
                                                                     binding.host_ip):
        raise LabtoolError(f"driver failed programming external connectivity on endpoint {container_id[:12]}: "
                           f"Bind for {binding.shown_ip}:{binding.host_port} failed: port is already allocated")


def container_started(container_id, endpoints, published, link_records):
    pass


def container_connected(container_id, network, endpoint):
    pass


def container_disconnected(container_id, network, endpoint):
    pass


def container_stopped(container_id):
    pass


def network_removed(network):
    pass


def reset():
    pass
