# Two entry points for newcomers: `make demo` and `make test`. Both bootstrap .venv idempotently.
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: venv demo test test-slow test-gpu lint

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	rm -f .venv/.installed-*; touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m byteir_cat.demo

lint: $(STAMP)
	.venv/bin/ruff check .

test: $(STAMP)
	.venv/bin/ruff check .
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu
