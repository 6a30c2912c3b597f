# Two entry points for newcomers: `make demo` and `make test`. Both bootstrap .venv idempotently.
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: venv demo test test-slow test-gpu lint fuzz gpu-kit gpu-kit-check jax-exports tf-exports models-table

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
	.venv/bin/lint-imports

test: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

# Coverage-guided fuzzing (atheris) of the MLIR-text and artifact loaders (tests/fuzz/fuzz_loaders.py): RUNS=N inputs
# (default 20000, about a minute); new inputs collect in out/fuzz-corpus, seeded from tests/fuzz/corpus; a finding
# stops the run with its input written to out/fuzz-crash-*.
RUNS ?= 20000
fuzz: $(STAMP)
	mkdir -p out/fuzz-corpus
	PYTHONPATH=. $(PY) tests/fuzz/fuzz_loaders.py out/fuzz-corpus tests/fuzz/corpus -runs=$(RUNS) -max_len=16384 \
		-artifact_prefix=out/fuzz-crash-

# The family sweep (tests/family_sweep): every catalog architecture through every door, each cell in a process of
# its own; writes tests/family_sweep/results.json and docs/MODELS.md. FAMILIES=a,b DOORS=compile,onnx: a part.
models-table: $(STAMP)
	$(PY) -m tests.family_sweep.table $(if $(FAMILIES),--families $(FAMILIES)) $(if $(DOORS),--doors $(DOORS))

# On the GPU machine there is no package index: use the Python that is there, install nothing.
GPU_PY := $(shell test -x .venv/bin/python && echo .venv/bin/python || echo python3)
test-gpu:
	$(GPU_PY) -m pytest -q -m gpu -p no:cacheprovider

# The GPU kit (DESIGN, "The GPU kit"; docs/GPU_KIT.md): build here; on the GPU machine run `.gpu-kit/run.sh OUTDIR`.
# QUICK=1: one small model and two kernels (minutes); TUNE=N: N other builds of each model GEMM, which the
# kit's tune step times on the GPU (byteir-cat tune) before keeping the fastest; TUNE=0: none.
KIT_ARCH ?= sm_90a
TUNE ?= 2
gpu-kit: $(STAMP)
	$(PY) -m byteir_cat.gpu_kit.build .gpu-kit --arch $(KIT_ARCH) $(if $(QUICK),--quick) --tune $(TUNE)

# The kit's command here, as the device tool runs it: no GPU, nvcc/ptxas replaced by stubs that fail, the same
# budget, time boxes and limits on what comes back; then once more, killed at a random step (SEED=N replays one).
gpu-kit-check: $(STAMP)
	test -x .gpu-kit/run.sh || { echo "gpu-kit-check: build the kit first (make gpu-kit)"; exit 2; }
	$(PY) -m byteir_cat.gpu_kit.dry_run .gpu-kit out/gpu-kit-check $(if $(SEED),--seed $(SEED))

# The committed JAX and TensorFlow exports that tests/test_jax_exports.py and test_tf_exports.py compile, remade in
# virtual environments of their own (neither framework is a dependency of byteir-cat).
JAX_PINS := jax==0.10.2 jaxlib==0.10.2 flax==0.12.8
TF_PIN := tensorflow-cpu==2.21.0
jax-exports:
	test -x out/jax-venv/bin/python || python3 -m venv out/jax-venv
	out/jax-venv/bin/python -m pip install -q $(JAX_PINS)
	out/jax-venv/bin/python tests/jax_exports/export.py

tf-exports:
	test -x out/tf-venv/bin/python || python3 -m venv out/tf-venv
	out/tf-venv/bin/python -m pip install -q $(TF_PIN)
	out/tf-venv/bin/python tests/tf_exports/export.py
