# Developer entry points. Everything runs from the repo's .venv (made by scripts/install.sh).
PYTHON := .venv/bin/python
PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider
PYTEST_ARGS ?=
ARGS ?=

.PHONY: install test test-long test-unit test-fast lint format demo bench bench-peer soak faults compose-demo clean

install:
	@bash scripts/install.sh

# pytest exit 5 = no tests collected: nothing ran, so it is a failure with a clear message.
# PYTEST_RC_FILE (optional, used by .ci/run) receives pytest's exact exit code.
# run_status: a command that exits with pytest's code; run_pytest: one pytest run.
define run_status
	@rc=0; $(1) || rc=$$?; \
	if [ -n "$${PYTEST_RC_FILE:-}" ]; then echo $$rc > "$$PYTEST_RC_FILE"; fi; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests (exit 5): nothing ran" >&2; fi; \
	exit $$rc
endef
run_pytest = $(call run_status,$(PYTEST) $(1) $(PYTEST_ARGS))

# Tiers: tests/unit (no process, no socket), tests/integration (real ZooKeeper/etcd/HAProxy),
# tests/system (demo, Docker, benchmark smoke, image build). `make test` (under 30 minutes
# on 2 cores) and `make test-long` (the long fault tests, marker `long`) are what CI runs.
# --durations: every run's log names the slowest tests (the 30-minute budget is thin).
# scripts/test-suite.sh: three pytest processes side by side (one run with PYTEST_ARGS).
test: install
	$(call run_status,PYTHON=$(PYTHON) bash scripts/test-suite.sh $(PYTEST_ARGS))

test-long: install
	$(call run_pytest,-m long)

test-unit: install
	$(call run_pytest,tests/unit)

test-fast: install
	$(call run_pytest,tests/unit tests/integration -m 'not slow and not long')

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

demo: install
	$(PYTHON) -m testbed.demo $(ARGS)

bench: install
	$(PYTHON) -m bench $(ARGS)

# EasyHAProxy beside synapse on a private dockerd (root); EasyHAProxy goes into .venv-peer/.
bench-peer: install
	$(PYTHON) -m bench peer $(ARGS)

# The memory soak: two hours of churn under load, every daemon's RSS, threads and fds
# sampled each minute (ARGS='--minutes 240': longer; ARGS=--quick: about a minute).
soak: install
	$(PYTHON) -m bench soak $(ARGS)

# Reliability suite: real faults under client load -> RELIABILITY.md (ARGS=--quick: < 3 min).
faults: test-long
	$(PYTHON) -m bench.faults $(ARGS)

compose-demo:
	bash scripts/compose-demo.sh $(ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
