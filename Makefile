# vlmq developer commands. `make demo` and `make test` set up .venv on first use.
PY ?= python3
comma := ,
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= api,worker,dev,quantize
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(subst $(comma),_,$(EXTRAS))
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast chaos soak soak-ci bench-fair lint format typecheck gpu-test clean

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing vlmq[$(EXTRAS)] (torch included: first time takes a few minutes)"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/vlmq demo

test: setup lint typecheck
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

# Every chaos test, the long ones too (S3 down 30 s, the 10,000-item job); figures in RELIABILITY.md.
chaos: setup
	VLMQ_CHAOS_ALL=1 $(BIN)/python -m pytest tests/chaos -m chaos -s $(PYTEST_ARGS)

# The soak (RELIABILITY.md, "Soak"): a whole system of its own for 7 simulated days, 50,000+ items and 24
# faults; prints the report and writes it to soak-report.json. soak-ci: the CI size (2-3 minutes).
soak: setup
	$(BIN)/python -m tests.soak --size full --report soak-report.json $(SOAK_ARGS)

soak-ci: setup
	$(BIN)/python -m tests.soak --size ci --report soak-report.json $(SOAK_ARGS)

# Fair scheduling on the CPU (issue 24): 1-page jobs of two tenants beside a 10,000-page bulk job, the
# fake engine at 1 s a batch of 8; prints the report and writes it to bench/results/fairness-cpu.json.
# About 6 minutes on 2 cores (25 before fair scheduling: small jobs waited for the whole bulk job);
# BENCH_ARGS="--small": 1-2 minutes.
bench-fair: setup
	$(BIN)/python -m bench.fairness --out bench/results/fairness-cpu.json $(BENCH_ARGS)

# Unit tests only (fakes: no Postgres, Redis or S3; pointed at closed ports so one that needs a service fails).
test-fast: setup
	VLMQ_TEST_PG_ADMIN_URL=postgresql://none@127.0.0.1:9/none VLMQ_TEST_REDIS_URL=redis://127.0.0.1:9/0 \
		$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

gpu-test:
	# vLLM and its stack emit many warnings; on the GPU they are shown, not turned into errors.
	python3 -m pytest tests/gpu -W default $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .vlmq .pytest_cache .mypy_cache .ruff_cache
