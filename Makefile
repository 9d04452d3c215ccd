# tf2torch developer commands.  Every target creates .venv/ first if it is missing.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: setup demo test test-slow corpus keras-hub layer-matrix conformance lint bench bench-memory bench-big bench-workers bench-ray codegen-lines fuzz clean

$(VENV_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[tf,dev,hub,keras2,ray]'
	$(PY) -m pip install --quiet --no-deps -c constraints.txt keras-hub==0.32.0
	$(PY) -m pip install --quiet --no-deps -c constraints.txt tf-keras==2.21.0
	touch $(VENV_STAMP)

setup: $(VENV_STAMP)

demo: $(VENV_STAMP)
	$(PY) -m pipeline demo -o runs

# Two test processes (xdist): each test is a TF worker plus torch, and two at a time use
# 2 cores better than one (measured: 16 min -> 9.5 min on 2 cores).
test: $(VENV_STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 2

test-slow: $(VENV_STAMP)
	$(PY) -m pytest -q -m slow

# Every keras.applications network through convert (part of test-slow), then its page
# docs/results/corpus.md.  CORPUS_SEED=N draws other weights and inputs (the false-alarm
# reruns; page docs/results/corpus-seedN.md); CORPUS_FAULTS=0 skips the planted faults (a
# false-alarm rerun only); CORPUS_JOBS=2 converts two networks at a time.
CORPUS_NAME := corpus$(if $(CORPUS_SEED),-seed$(CORPUS_SEED))
corpus: $(VENV_STAMP)
	rm -f runs/$(CORPUS_NAME).jsonl; mkdir -p runs
	$(if $(CORPUS_SEED),TF2TORCH_CORPUS_SEED=$(CORPUS_SEED)) $(if $(CORPUS_FAULTS),TF2TORCH_CORPUS_FAULTS=$(CORPUS_FAULTS)) TF2TORCH_CORPUS_TABLE=runs/$(CORPUS_NAME).jsonl \
	$(PY) -m pytest -q -m slow -n $(or $(CORPUS_JOBS),1) tests/test_corpus.py; status=$$?; \
	$(PY) bench/corpus_table.py runs/$(CORPUS_NAME).jsonl docs/results/$(CORPUS_NAME).md $(CORPUS_SEED) > /dev/null; exit $$status

# The keras-hub corpus (tests/test_keras_hub.py, all backbones, two at a time), then its table
# in docs/results/keras_hub.md.
keras-hub: $(VENV_STAMP)
	rm -f runs/keras_hub.jsonl; mkdir -p runs
	TF2TORCH_HUB_TABLE=runs/keras_hub.jsonl $(PY) -m pytest -q -m "" -n $(or $(HUB_JOBS),2) tests/test_keras_hub.py; status=$$?; \
	$(PY) bench/hub_table.py runs/keras_hub.jsonl docs/results/keras_hub.md > /dev/null; exit $$status

# The Keras layer matrix (tests/test_layer_matrix.py: every models/layer_matrix.py case on the
# keras3 route, and on the Keras 2 .h5/SavedModel routes where tf_keras is installed; two at a
# time), then its page docs/results/layer_matrix.md.
layer-matrix: $(VENV_STAMP)
	rm -f runs/layer_matrix.jsonl; mkdir -p runs
	TF2TORCH_LAYER_TABLE=runs/layer_matrix.jsonl $(PY) -m pytest -q -m "" -n $(or $(LAYER_JOBS),2) tests/test_layer_matrix.py; status=$$?; \
	$(PY) bench/layer_matrix_table.py runs/layer_matrix.jsonl docs/results/layer_matrix.md > /dev/null; exit $$status

# ONNX's own node tests through import and code generation, tallied per op
# (docs/results/conformance.md and .json).
conformance: $(VENV_STAMP)
	$(PY) -m conformance -j $(or $(JOBS),2)

lint: $(VENV_STAMP)
	$(PY) -m ruff check pipeline patches models tests bench fuzz conformance
	$(PY) -m mypy pipeline patches fuzz conformance

bench: $(VENV_STAMP)
	$(PY) bench/bench_latency.py

# Peak memory per convert stage as a multiple of the model's weights: ConvNeXtTiny, or
# MODEL="file.py:fn ..." (e.g. models/applications.py:ConvNeXtXLarge, whose float64 twin TF builds).
bench-memory: $(VENV_STAMP)
	$(PY) bench/bench_memory.py $(foreach m,$(MODEL),--model $(m))

# keras-hub Llama decoders at 0.3 and 1.1 billion parameters through convert with the full
# proof: stage times and peak memory (docs/results/bench_big.md; BIG_MODELS=llama_300m for one).
bench-big: $(VENV_STAMP)
	$(PY) bench/bench_big.py $(if $(BIG_MODELS),--models $(BIG_MODELS))

# Five small zoo conversions in one process: TF workers forked from the fork server vs spawned.
bench-workers: $(VENV_STAMP)
	$(PY) bench/bench_worker_start.py

# model.py lines flat and with block classes (MODELS="mobilenet_v2 hub:bert" to choose;
# HUB_ALL=1 adds every keras-hub backbone and a summary over them, ~30 min).
codegen-lines: $(VENV_STAMP)
	rm -f runs/codegen_lines.jsonl
	$(PY) bench/codegen_lines.py $(if $(HUB_ALL),--hub-all) $(MODELS)

# The fast zoo through migrate locally (--jobs 2) and on a local Ray cluster with 2 CPUs,
# alternating; Ray's overhead per model (docs/results/bench_ray.md).
bench-ray: $(VENV_STAMP)
	$(PY) bench/bench_ray.py

# Random Keras models through convert: FUZZ_N models from seed FUZZ_SEED (see fuzz/run.py).
fuzz: $(VENV_STAMP)
	FUZZ_N=$(or $(FUZZ_N),10) FUZZ_SEED=$(or $(FUZZ_SEED),0) $(PY) -m fuzz

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
