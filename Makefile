# `make test` and `make demo` set up .venv from the lock (constraints.txt) on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip setuptools
	$(PY) -m pip install -q -c constraints.txt -e '.[actors,test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/rillet demo

bench: $(STAMP)
	$(PY) benchmarks/actor_throughput.py

clean:
	rm -rf $(VENV) runs
