#!/usr/bin/env bash
# The one provisioning path: the Vagrant VM, `make lab`, `make test` and CI all run this.
# As root, on Debian 12 or Ubuntu 22.04/24.04. Idempotent: a second run changes nothing.
#
#   system packages   busybox-static (the base image), iproute2, iptables, python3-venv, ...
#                     and docker-registry, whose own service is masked (labtool runs it on 127.0.0.1)
#   virtualenv        $LABTOOL_VENV (default /opt/labtool/venv) from requirements.txt
#   labtool           installed editable from this checkout; `labtool` on PATH
#   base image        busybox, made offline from /bin/busybox
#
# With --vm (the Vagrantfile passes it; never on a CI host or a lecturer's own machine) also:
#   JupyterLab        a systemd service on the VM's port 8888, with a token; its URL is the last line
#   Docker            if Docker is (or gets) installed, its FORWARD DROP policy spares labtool's bridges
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABTOOL_VENV:-/opt/labtool/venv}
VM=0
for arg in "$@"; do
    case "$arg" in
        --vm) VM=1 ;;
        *) echo "usage: $0 [--vm]" >&2; exit 2 ;;
    esac
done
say() { printf 'provision: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "provision: run me as root (sudo $0): labtool needs namespaces, mounts and cgroups" >&2
    exit 1
fi

# --- system packages ------------------------------------------------------------------
PACKAGES=(
    busybox-static   # the base image's one binary
    iproute2         # ip, to look at links and namespaces in the notebooks
    iptables         # NAT and port publishing, in labtool's own chains
    util-linux       # unshare, nsenter, setpriv, findmnt
    procps           # ps, for the host side of the demos
    python3-venv     # the lab's virtualenv
    runc             # the reference OCI runtime, for bench/startup.py
    docker-registry  # Docker Distribution: the registry that notebook 04b and the tests run on 127.0.0.1
    apache2-utils    # htpasswd: bcrypt password files for the registry with Basic auth (tests)
    skopeo           # an independent registry and OCI layout reader (tests)
    umoci            # an independent OCI layout reader: unpacks what labtool writes (tests)
    openssl          # signs the tests' registry tokens (JWT, RS256)
    make git
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# docker-registry's package enables and starts a service listening on EVERY interface (port
# 5000). labtool starts its own registries, on 127.0.0.1 only, when a notebook or test needs
# one: mask the packaged service (before installing, so it never starts) and stop it if it runs.
if [ -d /run/systemd/system ]; then
    if [ "$(systemctl is-enabled docker-registry.service 2>/dev/null)" != masked ]; then
        say "masking docker-registry.service (it would listen on all interfaces)"
        systemctl mask -q docker-registry.service
    fi
    if systemctl is-active -q docker-registry.service; then
        say "stopping docker-registry.service"
        systemctl stop docker-registry.service
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- the virtualenv -------------------------------------------------------------------
# The system's python3 (not whatever python3 comes first on PATH), as on a fresh machine.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    /usr/bin/python3 -m venv "$VENV"
fi
stamp="$VENV/.labtool-provisioned"
want="$(sha256sum "$REPO/requirements.txt" "$REPO/pyproject.toml" | sha256sum | cut -c1-16) $REPO"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Python packages into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REPO/requirements.txt"
    # rfc3987-syntax (pulled in through jsonschema's format extras) compiles a grammar at
    # every import: 0.7 s on each pytest/nbval and JupyterLab start, for an IRI format check
    # nothing here uses. jsonschema skips that check when the module is absent.
    "$VENV/bin/pip" uninstall -q -y rfc3987-syntax 2>/dev/null || true
    # compat mode: a plain path in a .pth file; the default import hook costs 9 ms per start
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
        --config-settings editable_mode=compat -e "$REPO" 2>/dev/null
    echo "$want" > "$stamp"
fi
# /usr/local/bin/labtool: the client started lean, python -IS (labtool/client.py, LAUNCHER)
launcher=$("$VENV/bin/python" -c 'import sys; sys.path.insert(0, sys.argv[2]); from labtool.client import LAUNCHER
print(LAUNCHER.format(python=sys.argv[1], repo=sys.argv[2]), end="")' "$VENV/bin/python3" "$REPO")
if [ "$(cat /usr/local/bin/labtool 2>/dev/null)" != "$launcher" ]; then
    rm -f /usr/local/bin/labtool
    printf '%s\n' "$launcher" > /usr/local/bin/labtool
    chmod 755 /usr/local/bin/labtool
fi
# Byte-compile labtool now: where PYTHONDONTWRITEBYTECODE is set, every start would compile it again.
"$VENV/bin/python" -m compileall -q "$REPO/labtool" >/dev/null

# --- the base image -------------------------------------------------------------------
# Made offline from /bin/busybox; `labtool run` would make it on first use anyway.
# (LABTOOL_DAEMON=0 and --network none: provisioning leaves no daemon and no bridge behind.)
if ! env -u LABTOOL_ROOT LABTOOL_DAEMON=0 "$VENV/bin/labtool" images | grep -q '^busybox '; then
    say "making the busybox image"
    env -u LABTOOL_ROOT LABTOOL_DAEMON=0 "$VENV/bin/labtool" run --rm --network none busybox true >/dev/null
fi

if [ "$VM" = 1 ]; then
    # --- the VM only ----------------------------------------------------------------------
    # write_if_changed PATH MODE < CONTENT: install CONTENT at PATH; true if it changed.
    write_if_changed() {
        local new
        new=$(mktemp)
        cat > "$new"
        if cmp -s "$new" "$1"; then
            rm -f "$new"
            return 1
        fi
        install -D -m "$2" "$new" "$1"
        rm -f "$new"
        say "wrote $1"
    }
    reload=0

    # JupyterLab, as root like `make lab` (labtool needs root), on every address of the VM:
    # VirtualBox forwards the host's port to the VM's NAT address, vagrant-libvirt through an
    # ssh tunnel to the VM's loopback. The Vagrantfile forwards it to 127.0.0.1 of the host
    # only, so nobody else on the room's network reaches it; the token guards the rest.
    install -d -m 700 /etc/labtool
    if [ ! -s /etc/labtool/jupyter.env ]; then
        (umask 077; echo "JUPYTER_TOKEN=$(/usr/bin/python3 -c 'import secrets; print(secrets.token_hex(24))')" \
            > /etc/labtool/jupyter.env)
        say "made a JupyterLab token in /etc/labtool/jupyter.env"
    fi
    write_if_changed /etc/systemd/system/labtool-jupyter.service 644 <<UNIT && reload=1
[Unit]
Description=JupyterLab with the labtool notebooks (vagrant/provision.sh --vm)
After=network.target

[Service]
EnvironmentFile=/etc/labtool/jupyter.env
Environment=HOME=/root
WorkingDirectory=$REPO/notebooks
ExecStart=$VENV/bin/jupyter lab --ip=0.0.0.0 --port=8888 --no-browser --allow-root --ServerApp.root_dir=$REPO/notebooks
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT

    # Docker, when it runs, sets the FORWARD policy to DROP and forwards only for its own
    # bridges: labtool's containers would lose the network. Docker leaves the DOCKER-USER chain
    # (looked at first) to the administrator; this unit accepts labtool's bridges (lt*) there,
    # each time Docker starts. Without Docker nothing wants the unit and it never runs. Plain
    # rules, not a LABTOOL* chain: `labtool reset` removes those, and this must outlive a reset.
    write_if_changed /usr/local/lib/labtool/docker-forward 755 <<'SCRIPT' || true
#!/bin/sh
# Let labtool's bridges (lt*) forward although Docker set the FORWARD policy to DROP.
# Started after docker.service by labtool-docker-forward.service (vagrant/provision.sh --vm).
iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || exit 0     # Docker is not filtering
for dir in -i -o; do
    iptables -w -C DOCKER-USER "$dir" 'lt+' -m comment --comment labtool -j ACCEPT 2>/dev/null ||
        iptables -w -I DOCKER-USER "$dir" 'lt+' -m comment --comment labtool -j ACCEPT
done
SCRIPT
    write_if_changed /etc/systemd/system/labtool-docker-forward.service 644 <<'UNIT' && reload=1
[Unit]
Description=Let labtool's bridges forward although Docker sets the FORWARD policy to DROP
After=docker.service
PartOf=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/labtool/docker-forward

[Install]
WantedBy=docker.service
UNIT
    # At every boot: start the containers whose restart policy says so (always; unless-stopped
    # ones that were running when the VM went down), as dockerd does when it starts.
    write_if_changed /etc/systemd/system/labtool-boot.service 644 <<UNIT && reload=1
[Unit]
Description=Start labtool containers with --restart always / unless-stopped
After=local-fs.target network.target

[Service]
Type=oneshot
ExecStart=/usr/local/bin/labtool system boot

[Install]
WantedBy=multi-user.target
UNIT

    if [ "$reload" = 1 ]; then
        systemctl daemon-reload
        systemctl restart labtool-jupyter.service
    fi
    for unit in labtool-jupyter.service labtool-docker-forward.service labtool-boot.service; do
        systemctl is-enabled -q "$unit" || { say "enabling $unit"; systemctl enable -q "$unit"; }
    done
    if systemctl is-active -q docker.service && ! systemctl is-active -q labtool-docker-forward.service; then
        say "Docker runs: letting labtool's bridges through its FORWARD policy"
        systemctl start labtool-docker-forward.service
    fi
    systemctl is-active -q labtool-jupyter.service || { say "starting JupyterLab"; systemctl start labtool-jupyter.service; }
fi

say "ready: $("$VENV/bin/python" --version), labtool at /usr/local/bin/labtool"
if [ "$VM" = 1 ]; then
    token=$(sed -n 's/^JUPYTER_TOKEN=//p' /etc/labtool/jupyter.env)
    say "JupyterLab: http://127.0.0.1:${LABTOOL_HOST_PORT:-8888}/lab?token=$token"
fi
