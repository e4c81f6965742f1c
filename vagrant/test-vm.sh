#!/usr/bin/env bash
# `make test-vm`: the cgroup and namespace tests on a pure cgroup v2 machine, with and without systemd.
#
# The Vagrant box runs cgroup v2; CI machines may run v1 (a "hybrid" layout), where v2's
# memory, cpu and pids files cannot be tested. So this script boots a small Debian 12 guest
# under QEMU, with its own kernel and a pure cgroup v2 hierarchy, shares this repository with
# it over 9p (read-only), runs the tests inside and reads the result back:
#
#   vagrant/test-vm.sh                   build the guest image if needed, boot, run the tests
#   vagrant/test-vm.sh --systemd         the same image booted with systemd as PID 1 (as on the
#                                        Vagrant box): labtool's systemd cgroup driver is used there
#   vagrant/test-vm.sh [--systemd] --run 'CMD'   the same guest, but run CMD (as root, in /repo) instead
#   vagrant/test-vm.sh --install-tools   only install the host tools (also `make test-tools`)
#   vagrant/test-vm.sh --build           only build (or find) the guest image
#
# Its exit code is the guest's: pytest's (or CMD's). As root, on a Debian or Ubuntu host.
#
# Two ways to boot, one image. By default PID 1 is a small script (vagrant/test-vm/init) that
# mounts what systemd would mount and runs the tests: the guest starts them about 16 s after
# boot, and labtool's cgroupfs driver makes /sys/fs/cgroup/labtool/<id>. With --systemd, PID 1
# is systemd (about 34 s to the tests), the unit vm-test.service runs the same script, and
# labtool asks systemd for a delegated scope per container
# (labtool.slice/labtool-<id12>.slice/labtool-<id12>.scope, see labtool/cgroups/systemd.py).
#
# The guest image (a debootstrap'ed Debian 12 as an ext4 disk, its kernel and initrd) is built
# once and kept in $LABTOOL_VM_CACHE (default /var/cache/labtool/test-vm), under a key that is
# a hash of everything that goes into it: the package list, build_image below and the guest's
# init and unit (vagrant/test-vm/init, vagrant/test-vm/vm-test.service). Change any of them and
# the next run builds a new image and removes the old one. The disk is booted with snapshot=on:
# a run never changes the cache. Building needs the Debian archive (about 3 minutes); a cached
# run needs no network at all, and the guest never has one (-nic none).
#
# Why QEMU's TCG (a CPU emulated in software) and not KVM: on the CI machines /dev/kvm is a
# paravirtual variant that does not run a stock kernel. TCG does, 7 to 50 times slower.
#
# On an aarch64 host the same steps hold with qemu-system-aarch64 (package qemu-system-arm),
# machine "virt", console ttyAMA0 and the guest kernel linux-image-arm64; the case below
# picks those (not tried on such a host yet). bpf.py and syscalls.py know both syscall tables.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${LABTOOL_VM_CACHE:-/var/cache/labtool/test-vm}
SUITE=bookworm
TIMEOUT=${LABTOOL_VM_TIMEOUT:-2400}      # seconds for one guest run, boot to power-off
MEMORY=${LABTOOL_VM_MEMORY:-2048}        # MiB
CPUS=${LABTOOL_VM_CPUS:-2}
say() { printf 'test-vm: %s\n' "$*"; }
die() { printf 'test-vm: %s\n' "$*" >&2; exit 1; }

case "$(uname -m)" in
    x86_64)
        DEB_ARCH=amd64 QEMU=qemu-system-x86_64 QEMU_PKG=qemu-system-x86
        MACHINE=(-machine q35) CONSOLE=ttyS0 ;;
    aarch64)
        DEB_ARCH=arm64 QEMU=qemu-system-aarch64 QEMU_PKG=qemu-system-arm
        MACHINE=(-machine virt) CONSOLE=ttyAMA0 ;;
    *) die "no recipe for a $(uname -m) host (x86_64 and aarch64 have one)" ;;
esac

# What the guest image holds: a kernel, the tests' runner, and the tools the tests call.
GUEST_PACKAGES=(
    "linux-image-$DEB_ARCH" initramfs-tools kmod   # the guest's own kernel: cgroup v2, bpf, 9p
    python3 python3-pytest                         # the tests run with the guest's Python
    busybox-static                                 # labtool's base image is made from /bin/busybox
    util-linux                                     # mountpoint, nsenter, ipcmk (test_namespaces)
    iproute2 iptables procps                       # as provision.sh installs on a lab machine
    systemd dbus                                   # --systemd: PID 1, busctl and the system bus
)
# What this host needs to build and boot it; vagrant for tests/test_vagrant.py.
HOST_TOOLS=("$QEMU_PKG" debootstrap debian-archive-keyring e2fsprogs vagrant)

# --- host tools ---------------------------------------------------------------------------

install_tools() {
    local missing=() p
    for p in "${HOST_TOOLS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- the guest image ----------------------------------------------------------------------

debian_mirror() {
    # The Debian mirror this host already uses (a local mirror or proxy stays in use); none on
    # an Ubuntu host, where debootstrap's own default is right. LABTOOL_VM_MIRROR overrides.
    if [ -n "${LABTOOL_VM_MIRROR:-}" ]; then
        echo "$LABTOOL_VM_MIRROR"
        return
    fi
    # shellcheck disable=SC2016 # apt's own $(FIELD) syntax
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(LABEL)' 2>/dev/null |
        awk -v suite="$SUITE" '$2 == suite && $3 == "Debian" { print $1; exit }'
}

build_image() {   # build_image DIR: fill DIR with disk.raw, vmlinuz, initrd.img
    local out=$1 root="$1/rootfs" kver
    # shellcheck disable=SC2046 # the mirror is one word, or none
    debootstrap --variant=minbase --arch="$DEB_ARCH" --include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")" \
        "$SUITE" "$root" $(debian_mirror) > "$out/debootstrap.log" 2>&1 ||
        { tail -20 "$out/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    kver=$(basename "$(ls -d "$root"/lib/modules/*)")
    echo "$kver" > "$out/kernel-version"
    install -m 755 "$HERE/test-vm/init" "$root/sbin/labtool-vm-init"
    install -m 644 "$HERE/test-vm/vm-test.service" "$root/etc/systemd/system/vm-test.service"
    mkdir -p "$root/repo" "$root/results"
    echo labtool-vm > "$root/etc/hostname"
    # What a VM with no screen, sound, radio or network card never loads, and apt's leftovers:
    # a third of the size, and mkfs copies less.
    rm -rf "$root"/lib/modules/"$kver"/kernel/{sound,drivers/gpu,drivers/media,drivers/net/wireless} \
        "$root"/lib/modules/"$kver"/kernel/{drivers/infiniband,drivers/staging,drivers/bluetooth,net/bluetooth} \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/{doc,man,locale}
    chroot "$root" depmod -a "$kver"
    chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' > "$out/packages.txt"
    cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
    cp "$root/boot/initrd.img-$kver" "$out/initrd.img"
    mkfs.ext4 -q -F -L labtool-vm -d "$root" "$out/disk.raw" 2G > /dev/null
    rm -rf --one-file-system "$root"
}

image_key() {
    { printf '%s\n' "$SUITE" "$DEB_ARCH" "${GUEST_PACKAGES[@]}"; declare -f build_image; cat "$HERE/test-vm/init" "$HERE/test-vm/vm-test.service"; } |
        sha256sum | cut -c1-16
}

unmount_under() {   # anything a killed debootstrap left mounted under $1 (proc, sys in the rootfs)
    awk -v top="$1/" 'index($2, top) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
}

BUILDING=
cleanup_build() {
    if [ -n "$BUILDING" ]; then
        unmount_under "$BUILDING"
        if awk -v top="$BUILDING/" 'index($2, top) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
            say "left $BUILDING: something is still mounted under it" >&2
        else
            rm -rf --one-file-system "$BUILDING"
        fi
    fi
}

ensure_image() {   # sets IMAGE to the cached image's directory, building it if needed
    local key
    key=$(image_key)
    IMAGE="$CACHE/$key"
    mkdir -p "$CACHE"
    exec 9> "$CACHE/lock"
    flock 9                              # one build at a time; a second run waits and reuses it
    if [ -f "$IMAGE/disk.raw" ]; then
        say "guest image $key (cached, built $(date -r "$IMAGE/disk.raw" '+%F %T'))"
    else
        local avail
        avail=$(df -Pm "$CACHE" | awk 'NR == 2 { print $4 }')
        [ "$avail" -gt 3000 ] || die "only $avail MB free under $CACHE: building the guest image needs 3 GB"
        say "building guest image $key: debootstrap $SUITE ($DEB_ARCH) with ${GUEST_PACKAGES[*]}"
        local started=$SECONDS
        BUILDING=$(mktemp -d "$CACHE/build.XXXXXX")
        trap cleanup_build EXIT
        build_image "$BUILDING"
        mv "$BUILDING" "$IMAGE"
        BUILDING=
        say "built in $((SECONDS - started)) s: $(du -sh --apparent-size "$IMAGE/disk.raw" | cut -f1) disk" \
            "($(du -sh "$IMAGE/disk.raw" | cut -f1) used), kernel $(cat "$IMAGE/kernel-version")"
        local old
        for old in "$CACHE"/*/; do      # images of older keys: never used again
            [ "${old%/}" = "$IMAGE" ] || { say "removing the old image ${old%/}"; rm -rf "${old%/}"; }
        done
    fi
    flock -u 9
}

# --- a run ----------------------------------------------------------------------------------

INIT=script          # or systemd (--systemd)
boot_args() {   # the kernel command line's part that picks PID 1
    if [ "$INIT" = systemd ]; then
        # systemd, which starts vm-test.service; no login prompt on the console, no status lines
        echo "init=/lib/systemd/systemd systemd.wants=vm-test.service systemd.mask=serial-getty@$CONSOLE.service" \
            "systemd.mask=getty.target systemd.show_status=0"
    else
        echo "init=/sbin/labtool-vm-init"
    fi
}

RUN=
cleanup_run() {
    if [ -n "$RUN" ]; then
        if [ -s "$RUN/qemu.pid" ]; then
            local pid
            pid=$(cat "$RUN/qemu.pid")
            # only our QEMU: the pid file's process, if it still runs QEMU
            if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(command -v "$QEMU")" ]; then
                kill "$pid" 2>/dev/null || true
            fi
        fi
        [ -f "$RUN/console.log" ] && cp "$RUN/console.log" "$CACHE/last-run.log"
        rm -rf "$RUN"
    fi
}

run_guest() {   # run_guest [CMD]
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/labtool-test-vm.XXXXXX")
    trap cleanup_run EXIT
    trap 'exit 130' INT TERM
    mkdir "$RUN/results"
    # pyroute2 (step 05's netlink) is pure Python: the guest gets the lab's own copy through the
    # results share, so it runs the same version as the lab (Debian 12 packages 0.7, the lab 0.9)
    # and the image needs no rebuild for it
    local pyroute2_dir
    pyroute2_dir=$("${LABTOOL_VENV:-/opt/labtool/venv}/bin/python" -c \
        'import os, pyroute2; print(os.path.dirname(pyroute2.__file__))' 2>/dev/null) ||
        die "no pyroute2 in ${LABTOOL_VENV:-/opt/labtool/venv}: run vagrant/provision.sh (make provision) first"
    mkdir "$RUN/results/pylibs"
    cp -r "$pyroute2_dir" "$RUN/results/pylibs/"
    [ $# -eq 0 ] || printf '%s\n' "$1" > "$RUN/results/command"
    say "booting the guest with $INIT as PID 1 (QEMU TCG, $CPUS CPUs, $MEMORY MiB, no network; at most $TIMEOUT s)"
    local started=$SECONDS qrc=0
    # the QEMU process writes the guest's console to a file; tail shows it as it comes
    timeout -k 10 "$TIMEOUT" "$QEMU" "${MACHINE[@]}" -accel tcg,thread=multi -cpu max \
        -smp "$CPUS" -m "$MEMORY" -display none -monitor none -no-reboot -nic none \
        -serial "file:$RUN/console.log" -pidfile "$RUN/qemu.pid" \
        -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
        -append "root=/dev/vda rw console=$CONSOLE quiet loglevel=3 panic=-1 systemd.unified_cgroup_hierarchy=1 $(boot_args)" \
        -drive "file=$IMAGE/disk.raw,format=raw,if=virtio,snapshot=on" \
        -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap" \
        -virtfs "local,path=$RUN/results,mount_tag=results,security_model=none" \
        < /dev/null > "$RUN/qemu.out" 2>&1 &
    local qemu_job=$!
    until [ -e "$RUN/console.log" ] || ! kill -0 "$qemu_job" 2>/dev/null; do sleep 0.1; done
    tail -n +1 -f --pid="$qemu_job" "$RUN/console.log" 2>/dev/null | sed -u 's/\r$//' &
    local show_job=$!
    wait "$qemu_job" || qrc=$?          # (a wait, unlike a foreground command, ends at once on a signal)
    wait "$show_job" || true
    say "the guest ran $((SECONDS - started)) s"
    if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
        die "the guest did not finish within $TIMEOUT s (LABTOOL_VM_TIMEOUT); console in $CACHE/last-run.log"
    fi
    [ "$qrc" -eq 0 ] || { cat "$RUN/qemu.out" >&2; die "QEMU failed (exit $qrc)"; }
    [ -s "$RUN/results/rc" ] || die "the guest left no result (see the console above, kept in $CACHE/last-run.log)"
    local rc summary
    rc=$(cat "$RUN/results/rc")
    if [ $# -eq 0 ]; then
        summary=$(grep -E '^=+ .*(passed|failed|error|no tests ran).* =+$' "$RUN/results/guest.log" |
            tail -1 | sed -E 's/^=+ (.*) =+$/\1/' || true)
        say "cgroup v2 guest ($INIT as PID 1): ${summary:-no pytest summary line} (exit $rc)"
    fi
    return "$rc"
}

# --- main -----------------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || die "run me as root (sudo $0): installing packages, debootstrap and the guest's 9p shares need it"
if [ "${1:-}" = --systemd ]; then
    INIT=systemd
    shift
fi
case "${1:-}" in
    --install-tools) install_tools ;;
    --build) install_tools; ensure_image ;;
    --run) [ $# -eq 2 ] || die "usage: $0 [--systemd] --run 'COMMAND'"; install_tools; ensure_image; run_guest "$2" ;;
    "") install_tools; ensure_image; run_guest ;;
    *) die "usage: $0 [--install-tools | --build | [--systemd] [--run 'COMMAND']]" ;;
esac
