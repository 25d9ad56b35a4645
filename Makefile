# Two commands do all set-up on a fresh Debian machine with Python 3.11:
#   make demo   install into .venv, then run the end-to-end loop on the bundled sample data
#   make test   install into .venv, then the test suite (under xvfb-run when there is no display)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.napari-ssl-seg-installed
DEMO_OUT ?= demo_output

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml scripts/setup_env.sh
	PYTHON=$(PYTHON) bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

demo: install
	$(BIN)/napari-ssl-seg demo --out $(DEMO_OUT)

test: install
	bash scripts/run_tests.sh $(VENV)

lint: install
	$(BIN)/ruff check napari_ssl_seg tests benchmarks scripts

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info .pytest_cache .ruff_cache
