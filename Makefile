# The two commands of the README: `make demo` (main job) and `make test`.
VENV  := .venv
STAMP := $(VENV)/.xrd-agent-installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/xrd-agent demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/xrd-agent bench all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
