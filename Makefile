# `make test` and `make demo` set up .venv from the lock (constraints.txt) on a fresh machine.
# `make test` also runs the learner tests on current JAX (.venv-current-jax, constraints-current-jax.txt).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CJ_VENV := .venv-current-jax
CJ_STAMP := $(CJ_VENV)/.installed

.PHONY: test test-pinned test-pinned-head test-current-jax test-current-jax-then-tail demo install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt pip setuptools
	$(PY) -m pip install -q -c constraints.txt -e '.[actors,test]'
	touch $(STAMP)

# The two suites run side by side (2 cores: most of their time is compiling and waiting on processes);
# -O keeps each suite's output together. The pinned suite is the longer one, so its slowest files
# (PINNED_TAIL) run in the other job, after the current-JAX suite: every test runs, the two jobs end
# closer together.
PINNED_TAIL := tests/pipelines/test_ray_launch.py tests/pipelines/test_agent57_pipeline.py

test:
	$(MAKE) --no-print-directory -j2 -O test-pinned-head test-current-jax-then-tail

test-pinned: $(STAMP)
	$(PY) -m pytest -q tests

test-pinned-head: $(STAMP)
	$(PY) -m pytest -q tests $(addprefix --ignore=,$(PINNED_TAIL))

test-current-jax-then-tail: $(STAMP) $(CJ_STAMP)
	$(CJ_VENV)/bin/python -m pytest -q tests/learners
	$(PY) -m pytest -q $(PINNED_TAIL)

$(CJ_STAMP): pyproject.toml constraints-current-jax.txt
	test -x $(CJ_VENV)/bin/python || $(PYTHON) -m venv $(CJ_VENV)
	$(CJ_VENV)/bin/python -m pip install -q -c constraints-current-jax.txt jax jaxlib numpy equinox optax chex pytest hypothesis
	$(CJ_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(CJ_STAMP)

# rillet.learners on current JAX, as a GPU host runs them (rlax-based reference checks skip there).
test-current-jax: $(CJ_STAMP)
	$(CJ_VENV)/bin/python -m pytest -q tests/learners

demo: $(STAMP)
	$(VENV)/bin/rillet demo

bench: $(STAMP)
	$(PY) benchmarks/actor_throughput.py

clean:
	rm -rf $(VENV) $(CJ_VENV) runs
