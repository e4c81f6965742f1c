"""Names of the host objects step 05 makes, so that each can be found again (DESIGN.md).

A network interface name has at most 15 characters (IFNAMSIZ - 1, man 7 netdevice), and
all labtool roots on one machine share one list of links: a test run, a notebook and a
lecturer's labtool may work side by side. So every name carries a short *tag* of its root:

    lt0            the default bridge of the default root (/var/lib/labtool)  - Docker: docker0
    lt-<id12>      the bridge of a user-defined network                        - Docker: br-<id12>
    ltv-<hash11>   the host end of a container's veth pair                     - Docker: veth<hash>

and under LABTOOL_ROOT=/some/dir the same with four hex digits of that root in them:
``lt9f3a0``, ``lt9f3a-<id8>``, ``ltv9f3a-<hash7>``. ``labtool reset`` there removes only
its own; the test suite's host-state guard ignores the others.
"""

import contextlib
import hashlib
import os

# Which LABTOOL_ROOT a tag stands for, machine-wide: one file per root that made a bridge,
# named by its tag (6 hex digits, as its iptables chains), holding the root's path. So the
# bridges and chains of a root whose directory was deleted without ``labtool reset`` can
# still be found and removed (``labtool reset`` does, from any root), and the test suite
# can tell its own roots' objects from those of another run.
ROOTS_DIR = "/run/lock/labtool-roots"


def tag():
    """"" for the default root, else 4 hex digits of the root's path (the first 4 of the
    6 that name its iptables chains, see root_tag6)."""
    return root_tag6()[:4]


def default_bridge():
    return f"lt{tag()}0"


def bridge_for(network_id):
    return f"lt{tag()}-{network_id}"[:15]


def veth_for(container_id, network_id):
    """The host end of the veth pair that plugs ``container_id`` into ``network_id``."""
    digest = hashlib.sha256(f"{container_id}/{network_id}".encode()).hexdigest()
    return f"ltv{tag()}-{digest}"[:15]


def is_ours(ifname):
    """True for a link this root made (bridge or veth)."""
    t = tag()
    return ifname.startswith((f"lt{t}0", f"lt{t}-", f"ltv{t}-")) and (t or not tag_of_link(ifname))


def tag_of_link(ifname):
    """The 4 hex digits of a LABTOOL_ROOT's link (``lt9f3a0``, ``lt9f3a-...``, ``ltv9f3a-...``);
    "" for a link of the default root."""
    rest = ifname[3:] if ifname.startswith("ltv") else ifname[2:]
    head = rest[:4]
    tagged = len(head) == 4 and all(ch in "0123456789abcdef" for ch in head) and rest[4:5] in ("0", "-")
    return head if tagged else ""


def root_tag6(root=None):
    """6 hex digits of a LABTOOL_ROOT (this one by default): its iptables chains carry them."""
    root = root if root is not None else os.environ.get("LABTOOL_ROOT")
    return hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:6] if root else ""


def record_root():
    """Note (once) that this root made host objects; nothing for the default root."""
    tag6 = root_tag6()
    if not tag6:
        return
    path = os.path.join(ROOTS_DIR, tag6)
    if not os.path.exists(path):
        os.makedirs(ROOTS_DIR, exist_ok=True)
        with open(path, "w") as f:
            f.write(os.path.realpath(os.environ["LABTOOL_ROOT"]))


@contextlib.contextmanager
def acting_for(root):
    """Name things as root ``root`` would (every name here and in publish.py comes from
    LABTOOL_ROOT): how ``labtool reset`` finds what a deleted root left behind."""
    saved = os.environ.get("LABTOOL_ROOT")
    os.environ["LABTOOL_ROOT"] = root
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LABTOOL_ROOT"]
        else:
            os.environ["LABTOOL_ROOT"] = saved


def forget_root(tag6=None):
    try:
        os.unlink(os.path.join(ROOTS_DIR, tag6 or root_tag6()))
    except (FileNotFoundError, IsADirectoryError):
        pass


def recorded_roots():
    """{tag6: root path} of every root that made host objects and has not been reset."""
    found = {}
    for tag6 in os.listdir(ROOTS_DIR) if os.path.isdir(ROOTS_DIR) else []:
        try:
            with open(os.path.join(ROOTS_DIR, tag6)) as f:
                found[tag6] = f.read()
        except OSError:
            pass
    return found


def orphans():
    """{tag6: path} of recorded roots whose directory is gone: nobody can reset them any more."""
    return {tag6: path for tag6, path in recorded_roots().items() if not os.path.isdir(path)}
