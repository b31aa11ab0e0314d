# make test: everything CI runs, on a fresh Debian 12 machine (as root for the peers).
PYTHON ?= python3

.PHONY: test deps peers lint unit example

test: deps peers lint unit example

deps:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat

peers:
	bash .ci/install-peers

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy

unit:
	$(PYTHON) -m pytest -q

example:
	cd examples/announce && PYTHONPATH=../..:. $(PYTHON) -m twisted.trial --temp-directory=/tmp/fwx-trial test_announce
	find . -name dropin.cache -delete
