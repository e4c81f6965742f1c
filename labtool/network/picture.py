"""A picture of the network topology, drawn from live state (notebook 05).

``state()`` asks labtool itself, in a fresh process (``labtool network inspect``,
``labtool inspect``: never pyroute2 in a Jupyter kernel), and reads the host's links from
``/sys/class/net``. ``draw(state)`` draws it with matplotlib:

    the host (its published ports on top)
      |-- bridge lt0 172.17.0.1/16 -- veth -- [container  172.17.0.2  eth0]
      |-- bridge lt-... (a user-defined network) -- veth -- [container ...]
"""

import json
import os

from labtool import notebook
from labtool.network import naming


def state():
    """{"networks": [{name, bridge, subnet, gateway, icc, up, veths, containers: [{name, ip, mac,
    veth, ports}]}]}, for every network of this labtool root (``veths``: the ports the bridge has
    on the host, from /sys/class/net/BRIDGE/brif; ``veth``: the host end that should be one)."""
    names = notebook.labtool("network", "ls", "-q", quiet=True).out.split()
    ids = [n for n in names if n not in ("host", "none")]
    networks = json.loads(notebook.labtool("network", "inspect", *ids, quiet=True).out or "[]") if ids else []
    found = []
    for network in networks:
        members = []
        for container_id, endpoint in network["Containers"].items():
            info = json.loads(notebook.labtool("inspect", container_id, quiet=True).out or "[{}]")[0]
            ports = info.get("NetworkSettings", {}).get("Ports") or {}
            members.append({"name": endpoint["Name"], "ip": endpoint["IPv4Address"],
                            "mac": endpoint["MacAddress"], "veth": naming.veth_for(container_id, network["Id"]),
                            "ports": [f"{b['HostIp']}:{b['HostPort']}->{key}" for key, bs in ports.items()
                                      for b in bs or []]})
        bridge = network["Options"]["com.docker.network.bridge.name"]
        found.append({"name": network["Name"], "bridge": bridge, "subnet": network["IPAM"]["Config"][0]["Subnet"],
                      "gateway": network["IPAM"]["Config"][0]["Gateway"],
                      "icc": network["Options"].get("com.docker.network.bridge.enable_icc", "true") != "false",
                      "up": os.path.exists(f"/sys/class/net/{bridge}"),
                      "veths": sorted(os.listdir(f"/sys/class/net/{bridge}/brif"))
                      if os.path.isdir(f"/sys/class/net/{bridge}/brif") else [],
                      "containers": sorted(members, key=lambda m: m["name"])})
    return {"networks": found}


def draw(topology, ax=None):
    """Draw ``state()``: the host on top, one row per bridge, its containers below it."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    networks = [n for n in topology["networks"] if n["containers"] or n["name"] == "bridge"]
    width = max([len(n["containers"]) for n in networks] + [1]) * 3.2 + 1.5
    height = 2.2 + 3.2 * len(networks)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(2.4 + width * 0.9, 15), 0.9 * height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="black"))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8)

    ports = [p for n in networks for c in n["containers"] for p in c["ports"]]
    host = "host: its own network namespace (eth0, routes, iptables)"
    box(0.2, height - 1.1, width - 0.4, 0.8, host + ("\npublished: " + ", ".join(ports) if ports else ""),
        "#dde8f5")
    last_y = height - 2.3 - 3.2 * (len(networks) - 1)
    ax.plot([0.3, 0.3], [height - 1.15, last_y + 0.3], color="gray", lw=1)   # the host routes to each bridge
    for row, network in enumerate(networks):
        y = height - 2.3 - 3.2 * row
        label = (f"bridge {network['bridge']} ({network['name']})  {network['gateway']}  {network['subnet']}"
                 + ("" if network["icc"] else "  icc=false"))
        box(0.5, y, width - 0.9, 0.6, label, "#f5e6c8" if network["icc"] else "#f5c8c8")
        ax.plot([0.3, 0.5], [y + 0.3, y + 0.3], color="gray", lw=1)
        for i, c in enumerate(network["containers"]):
            x = 0.8 + 3.2 * i
            ax.plot([x + 1.3, x + 1.3], [y - 0.05, y - 1.3], color="black", lw=1.5)
            ax.text(x + 1.4, y - 0.55, f"veth {c['veth']}", fontsize=7, color="gray")
            ax.text(x + 1.4, y - 0.85, "(eth0 inside)", fontsize=7, color="gray")
            box(x, y - 2.4, 2.6, 1.1, f"{c['name']}\n{c['ip']}\n{c['mac']}", "#d8f0d8")
    return ax
