# make lab    install everything, then start JupyterLab on 127.0.0.1:8888 with notebooks/
# make test   install everything, then run the whole test suite (pytest + nbval)
# make test-vm  the cgroup and namespace tests again, inside a pure cgroup v2 Debian 12 guest (QEMU);
#               then tests/test_cgroups.py in the same guest booted with systemd (make test-vm-systemd)
# make test-tools  the host tools of the VM checks: QEMU, debootstrap, vagrant (Debian packages)
VENV ?= /opt/labtool/venv
PYTHON = $(VENV)/bin/python
PORT ?= 8888

.PHONY: lab test test-vm test-vm-systemd test-tools provision bench student

provision:
	bash vagrant/provision.sh

lab: provision
	@echo "Starting JupyterLab: open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	cd notebooks && $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser --allow-root \
		--ServerApp.root_dir=$(CURDIR)/notebooks

test: provision
	$(PYTHON) -m pytest

# Boots a small Debian 12 guest (kernel, python3, pytest, busybox, systemd: an image built once and
# cached under /var/cache/labtool/test-vm) and runs tests/test_cgroups*.py, test_namespaces.py and the
# device tests of test_privileged.py in
# it, with a small script as PID 1 (labtool's cgroupfs driver); then boots it again with systemd as
# PID 1, as on the Vagrant box, and runs tests/test_cgroups.py and the privileged device cgroup test
# (labtool's systemd driver). Both run;
# the exit code is not 0 if either failed (the last failing guest pytest's). See vagrant/test-vm.sh.
test-vm: test-tools
	@rc=0; bash vagrant/test-vm.sh || rc=$$?; bash vagrant/test-vm.sh --systemd || rc=$$?; exit $$rc

test-vm-systemd: test-tools
	bash vagrant/test-vm.sh --systemd

test-tools:
	bash vagrant/test-vm.sh --install-tools

bench: provision
	$(PYTHON) bench/startup.py
