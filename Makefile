# Two entry points on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the package with pinned constraints.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint bench constraints schemas clean

demo: $(STAMP)
	$(BIN)/advbench demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src flows tests bench

bench: $(STAMP)
	$(BIN)/python bench/concepts.py

.PHONY: bench-scale bench-corpa bench-attack
bench-scale: $(STAMP)
	$(BIN)/python bench/build_scale.py

bench-corpa: $(STAMP)
	$(BIN)/python bench/corpa_reports.py

bench-attack: $(STAMP)
	$(BIN)/python bench/attack.py

schemas: $(STAMP)
	$(BIN)/advbench schema --out schemas

# Re-pin after changing dependencies in pyproject.toml.
constraints: $(STAMP)
	{ echo "# Pinned versions for reproducible installs (make install uses: pip install -c constraints.txt)."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu//' | grep -v '^advbench'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build dist
