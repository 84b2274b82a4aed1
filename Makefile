# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Segment a real tissue image shipped by scikit-image with the bundled default model.
demo: $(STAMP)
	$(BIN)/sac segment "$$($(BIN)/python -c 'import skimage.data, os; print(os.path.join(os.path.dirname(skimage.data.__file__), "ihc.png"))')" --out demo_out

# Style and layering checks (ruff, import-linter), then the whole suite, slow and data tests included (data tests
# skip with a reason without ../shared/data; browser tests without a Chromium).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) demo_out .pytest_cache
