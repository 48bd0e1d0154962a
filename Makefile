# make demo: set up (once) and run the embedded demo. make test: set up (once) and run the tests.
PYTHON ?= python3.11
VENV   := .venv
STAMP  := $(VENV)/.installed
DEMO   := $(VENV)/.installed-demo

.PHONY: demo test lint bench clean

# the demo needs the package alone; the tests also need the test tools and Ray (tinycl sweep)
$(DEMO): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH, or make PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e .
	touch $(DEMO)

$(STAMP): $(DEMO)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test,sweep]'
	touch $(STAMP)

demo: $(DEMO)
	$(VENV)/bin/tinycl demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check tinycl tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
