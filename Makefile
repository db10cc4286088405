# The two commands of the README: `make demo` (main job) and `make test`.
VENV  := .venv
STAMP := $(VENV)/.xrd-agent-installed
# Test processes: CI has 2 cores; whole files stay on one worker (their fixtures are built once).
TEST_WORKERS ?= 2

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xrd-agent demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(VENV)/bin/xrd-agent bench all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
