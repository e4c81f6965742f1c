#!/bin/sh
# Runs inside the `make test-vm` guest, from the host's repository shared on /repo (read-only),
# as root, with the guest's own python3 and pytest (Debian packages in the image, no network).
# Not part of the image: edit it freely, no rebuild needed.
#
# If the host left a command in /results/command (vagrant/test-vm.sh --run 'CMD'), it runs
# that command instead of the tests. Its exit code is the guest's result either way.
set -u
export PYTHONPATH=/repo:/results/pylibs PYTHONDONTWRITEBYTECODE=1 HOME=/root LANG=C.UTF-8
# --privileged on v2 (step 07): no device program attached, and every row of notebook 07's table
PRIVILEGED="tests/test_privileged.py::test_device_cgroup_allows_all tests/test_privileged.py::test_every_row_of_the_table"
TESTS="tests/test_cgroups.py tests/test_cgroups_bpf.py tests/test_namespaces.py $PRIVILEGED"
modprobe loop 2>/dev/null || true     # /dev/loop-control, a host device the privileged rows look for

fs=$(stat -fc %T /sys/fs/cgroup)
echo "guest: kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, $(python3 --version), pytest $(python3 -c 'import pytest; print(pytest.__version__)')"
echo "guest: /sys/fs/cgroup is $fs"
echo "guest: cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "guest: cgroup.subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
if [ "$fs" != cgroup2fs ] || ! grep -qw systemd.unified_cgroup_hierarchy=1 /proc/cmdline; then
    echo "guest: not a pure cgroup v2 machine: nothing proven here"
    exit 2
fi

if [ -d /run/systemd/system ]; then
    # `test-vm.sh --systemd`: systemd is PID 1 and the tests run in its vm-test.service, as
    # JupyterLab's service does on the Vagrant box; labtool's systemd cgroup driver is proven here.
    TESTS="tests/test_cgroups.py tests/test_privileged.py::test_device_cgroup_allows_all"
    echo "guest: systemd $(systemctl --version | awk 'NR == 1 { print $2 }') is PID 1 ($(systemctl is-system-running)); we are in $(cut -d: -f3 /proc/self/cgroup)"
else
    # Like a process started by systemd (JupyterLab's service on the box), the tests run in a
    # leaf cgroup, not in the root one.
    mkdir -p /sys/fs/cgroup/test.scope
    echo $$ > /sys/fs/cgroup/test.scope/cgroup.procs
fi

if [ -s /results/command ]; then
    echo "guest: running $(cat /results/command)"
    sh -c "$(cat /results/command)"
    exit $?
fi
echo "guest: # shellcheck disable=SC2086 # TESTS is a list of paths
python3 -m pytest $TESTS"
start=$(date +%s)
# shellcheck disable=SC2086 # TESTS is a list of paths
python3 -m pytest $TESTS -o addopts="-p no:cacheprovider" -ra --durations=10 --color=no
rc=$?
echo "guest: pytest took $(( $(date +%s) - start )) s and exited $rc"
exit $rc
