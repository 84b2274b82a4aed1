# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Segment a real tissue image shipped by scikit-image with the bundled default model.
demo: $(STAMP)
	$(BIN)/sac segment "$$($(BIN)/python -c 'import skimage.data, os; print(os.path.join(os.path.dirname(skimage.data.__file__), "ihc.png"))')" --out demo_out

# The whole suite, slow and data tests included (data tests skip with a reason without ../shared/data).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) demo_out .pytest_cache
