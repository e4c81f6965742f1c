#!/usr/bin/env bash
# The one provisioning path: the Vagrant VM, `make lab`, `make test` and CI all run this.
# As root, on Debian 12 or Ubuntu 22.04/24.04. Idempotent: a second run changes nothing.
#
#   system packages   busybox-static (the base image), iproute2, iptables, python3-venv, ...
#   virtualenv        $LABTOOL_VENV (default /opt/labtool/venv) from requirements.txt
#   labtool           installed editable from this checkout; `labtool` on PATH
#   base image        busybox, made offline from /bin/busybox
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LABTOOL_VENV:-/opt/labtool/venv}
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
    make git
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
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
ln -sf "$VENV/bin/labtool" /usr/local/bin/labtool
# Byte-compile labtool now: where PYTHONDONTWRITEBYTECODE is set, every start would compile it again.
"$VENV/bin/python" -m compileall -q "$REPO/labtool" >/dev/null

# --- the base image -------------------------------------------------------------------
# Made offline from /bin/busybox; `labtool run` would make it on first use anyway.
if ! env -u LABTOOL_ROOT "$VENV/bin/labtool" images | grep -q '^busybox '; then
    say "making the busybox image"
    env -u LABTOOL_ROOT "$VENV/bin/labtool" run --rm busybox true >/dev/null
fi
say "ready: $("$VENV/bin/python" --version), labtool at /usr/local/bin/labtool"
