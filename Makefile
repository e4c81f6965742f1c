# make lab    install everything, then start JupyterLab on 127.0.0.1:8888 with notebooks/
# make test   install everything, then run the whole test suite (pytest + nbval)
# make test-vm  the cgroup and namespace tests again, inside a pure cgroup v2 Debian 12 guest (QEMU)
# make test-tools  the host tools of the VM checks: QEMU, debootstrap, vagrant (Debian packages)
VENV ?= /opt/labtool/venv
PYTHON = $(VENV)/bin/python
PORT ?= 8888

.PHONY: lab test test-vm test-tools provision bench student

provision:
	bash vagrant/provision.sh

lab: provision
	@echo "Starting JupyterLab: open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	cd notebooks && $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser --allow-root \
		--ServerApp.root_dir=$(CURDIR)/notebooks

test: provision
	$(PYTHON) -m pytest

# Boots a small Debian 12 guest (kernel, python3, pytest, busybox: an image built once and cached
# under /var/cache/labtool/test-vm) and runs tests/test_cgroups*.py and test_namespaces.py in it.
# Its exit code is the guest's pytest's. See vagrant/test-vm.sh.
test-vm: test-tools
	bash vagrant/test-vm.sh

test-tools:
	bash vagrant/test-vm.sh --install-tools

bench: provision
	$(PYTHON) bench/startup.py
