# make demo / make test on a fresh machine (Debian 12, Ubuntu 24.04), as root or not.
#
# Everything runs in a virtual environment, .venv, made with the system's Python
# (SYSTEM_PYTHON) if missing: the system's pip refuses to install there
# ("externally-managed-environment").  The project is installed into it editable, in
# compat mode (a plain editable install hides the twistd plugin: docs in design.md).
# The real FTP peers the interop tests use come from apt, as root only; without them
# those tests skip and say why (under CI=true they fail).
SYSTEM_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(abspath $(VENV))/bin/python
PIP_INSTALL := $(PYTHON) -m pip install --quiet --disable-pip-version-check
EDITABLE := --config-settings editable_mode=compat

.PHONY: test demo venv install deps peers lint unit example

test: deps peers lint unit example

demo: install
	find . -name dropin.cache -delete
	$(abspath $(VENV))/bin/twistd -n fwx demo

venv: $(PYTHON)

$(PYTHON):
	@$(SYSTEM_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	    echo "fwxtwisted needs Python 3.11 or newer; $(SYSTEM_PYTHON) is:" \
	        "$$($(SYSTEM_PYTHON) --version 2>/dev/null || echo not found)." \
	        "Give another with: make SYSTEM_PYTHON=python3.12 ..." >&2; exit 1; }
	@$(SYSTEM_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	    echo "cannot create $(VENV) with $(SYSTEM_PYTHON) -m venv: on Debian and Ubuntu" \
	        "install the python3-venv package (as root: apt-get install python3-venv)." >&2; \
	    exit 1; }

# The project alone: what the demo needs.
install: venv
	$(PIP_INSTALL) -e . $(EDITABLE)

# The project and the test tools.
deps: venv
	$(PIP_INSTALL) -e '.[test]' $(EDITABLE)

peers:
	@if [ "$$(id -u)" -eq 0 ]; then \
	    bash .ci/install-peers; \
	else \
	    echo "peers: not root, so no FTP servers and clients installed from apt;" \
	        "the tests that need them skip and say so (run make test as root to get them)."; \
	fi

lint: deps
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

unit: deps
	$(PYTHON) -m pytest -q

example: deps
	cd examples/announce && PYTHONPATH=../..:. $(PYTHON) -m twisted.trial --temp-directory=/tmp/fwx-trial test_announce
	find . -name dropin.cache -delete
