"""What the network step asks of the firewall; ``publish.py`` holds the iptables rules.

One place where the step's events meet publish.py's functions:

    network_made           a bridge's own rules: NAT out, isolation from other bridges, icc
    network_removed        and their removal
    container_started      hairpin on its veth, its published ports (DNAT), its links (icc=false)
    container_connected    a live ``network connect``: hairpin on the new veth
    container_stopped      every rule of the container (ports and links)
    reset                  every chain of this root
"""

from labtool.network import publish


def network_made(network, subnet, icc):
    publish.add_bridge(network["Options"]["com.docker.network.bridge.name"], str(subnet), icc=icc)


def network_removed(network):
    publish.remove_bridge(network["Options"]["com.docker.network.bridge.name"])


def container_started(container_id, endpoints, bindings, link_records):
    """Returns the bindings with their host ports chosen (``publish.publish``)."""
    from labtool.network import links

    for _, endpoint in endpoints:
        publish.set_hairpin(endpoint["Veth"])
    if not bindings and not link_records:
        return []                 # no rule to add (and no iptables to run: start-up stays quick)
    network, endpoint = endpoints[0]
    bridge = network["Options"]["com.docker.network.bridge.name"]
    chosen = publish.publish(container_id, bridge, endpoint["IPv4Address"].split("/")[0], bindings)
    for link, record, target_ip in link_records:
        if target_ip:
            publish.allow_link(container_id, bridge, endpoint["IPv4Address"].split("/")[0], target_ip,
                               links.link_ports(record.state.get("Exposed", [])))
    return chosen


def container_connected(container_id, network, endpoint):
    publish.set_hairpin(endpoint["Veth"])


def container_stopped(container_id):
    publish.unpublish(container_id)


def reset():
    publish.remove_all()
