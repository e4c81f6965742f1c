# make lab    install everything, then start JupyterLab on 127.0.0.1:8888 with notebooks/
# make test   install everything, then run the whole test suite (pytest + nbval)
VENV ?= /opt/labtool/venv
PYTHON = $(VENV)/bin/python
PORT ?= 8888

.PHONY: lab test provision bench student

provision:
	bash vagrant/provision.sh

lab: provision
	@echo "Starting JupyterLab: open the http://127.0.0.1:$(PORT)/lab?token=... URL printed below."
	cd notebooks && $(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser --allow-root \
		--ServerApp.root_dir=$(CURDIR)/notebooks

test: provision
	$(PYTHON) -m pytest

bench: provision
	$(PYTHON) bench/startup.py
