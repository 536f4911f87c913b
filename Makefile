# Setup installs the CPU build of torch first (from this machine's wheel where it exists) so the
# project's torch range is already satisfied and no multi-GB CUDA build is pulled in.
# Set QA_TORCH_SPEC to choose another build, e.g. QA_TORCH_SPEC="torch>=2.4" on a GPU host.
PYTHON ?= python3
VENV ?= .venv
QA_TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench serve clean

# pip compiles all 22,000 modules of the dependencies at install: 110 s of CI's setup, for the
# eighth of them a run ever imports. Those are compiled on first import instead, and kept: which
# needs bytecode writing on (some CI images turn it off, and every process would compile again).
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --no-compile "$(QA_TORCH_SPEC)"
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/qa-pipeline train configs/demo.yaml

# Two workers (pytest-xdist), each given whole modules, slowest first (tests/conftest.py): the suite
# took 20 min 14 s on 2 cores at d87c8d3. A third worker saved only 7 % there (the cores are busy
# already). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15 \
		-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

bench: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .qa-store runs .pytest_cache

# A local Prefect server + process worker with the deployments registered (UI on :4200).
serve: setup
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 & \
	sleep 15; export PREFECT_API_URL=http://127.0.0.1:4200/api; \
	$(BIN)/prefect work-pool create local --type process || true; \
	QA_WORK_POOL=local $(BIN)/qa-pipeline deploy --work-pool local; \
	$(BIN)/prefect worker start --pool local
