# The targets CI runs; local runs and CI stay identical.
PY      ?= python3.11
VENV    ?= .venv
BIN      = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install serve test faults lint typecheck openapi bench screenshot redis browser docker-smoke mutate clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

redis:
	bash .ci/ensure-redis

browser:
	bash .ci/ensure-chromium

serve: install
	$(BIN)/netshrink serve

test: install redis browser
	$(BIN)/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# The crash-recovery fault tests alone (they are also part of `make test`): real workers, `serve`
# and a private redis-server, SIGKILLed mid-job.
faults: install redis
	$(BIN)/pytest -m faults -p no:cacheprovider --durations=0 $(PYTEST_ARGS) tests/faults

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/linked-tree $(BIN)/mypy -p netshrink
	$(BIN)/python .ci/linked-tree $(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile .ci/redis.Dockerfile
	$(BIN)/check-jsonschema --schemafile openapi/vendor/compose-spec.json docker-compose.yml

# Build the CPU image and run redis + api + worker in a private dockerd (root; see README "Docker").
docker-smoke: install
	PY=$(abspath $(BIN))/python bash .ci/docker-smoke

# Mutation testing, not in CI (slow: README "Testing" has the measured run time and survivors).
# mutmut over bounds/, evaluation/metrics.py and search/select.py ([tool.mutmut] in pyproject.toml),
# then the seven formula mutations issue 12 named, applied by hand. MUTATE_CHILDREN: parallel mutants.
MUTATE_CHILDREN ?= 1
mutate: install
	nice -n 10 $(BIN)/python .ci/mutate $(MUTATE_CHILDREN); rc=$$?; $(BIN)/python .ci/named-mutations && exit $$rc

openapi: install
	$(BIN)/python -m netshrink.service.openapi_dump > openapi/openapi.json

bench: install
	$(BIN)/python -m bench.core
	$(BIN)/python -m bench.tightness
	$(BIN)/python -m bench.width
	$(BIN)/python -m bench.width_layers
	$(BIN)/python -m bench.heavy_tails
	$(BIN)/python -m bench.budget
	$(BIN)/python -m bench.example_report

screenshot: install
	$(BIN)/python -m netshrink.reporting.screenshot

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
