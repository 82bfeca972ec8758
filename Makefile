# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv if missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-formats bench-baselines bench-fidelity bench-pamap2 bench-mapped bench-select bench-tune install clean bench-quality bench-speed bench-cv bench-parallel gpu

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first and pinned: anything that depends on torch installed before it pulls a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet torch==2.13.0 -e ".[test,deploy,postgres,tensorboard,mlflow]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgedistill run

# The layer contract (pyproject.toml [tool.importlinter]) first: a broken one fails the target without running pytest.
# Both outputs go to .pytest-last.log (.ci/run reads it); the exit status is lint-imports' if it fails, else pytest's.
# --durations lists the slowest tests in the log: the suite must stay under 10 minutes on 2 cores. Two xdist workers
# (one torch thread each, tests/conftest.py) halve it there: the tests are mostly single-threaded and I/O-bound.
test: $(STAMP)
	$(BIN)/lint-imports --no-logo 2>&1 | tee .pytest-last.log; rc=$${PIPESTATUS[0]}; [ $$rc -eq 0 ] || exit $$rc; \
	$(BIN)/python -m pytest -m "not slow" -n 2 --durations=25 2>&1 | tee -a .pytest-last.log; exit $${PIPESTATUS[0]}

# Tests marked slow: the rocket baselines (aeon's numba compiles each rocket on an installation's first use, 1-2 min),
# the shipped study sweeps in smoke mode (30-90 s each) and the long multi-process runs (DDP/FSDP kill and resume).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The export formats whose runtimes make does not install (~1 GB): executorch here; tflite's install is in docs/deploy.md.
# Their tests skip, naming the extra, where the package is missing (as in make test on a fresh machine).
test-formats: $(STAMP)
	$(BIN)/pip install --quiet torch==2.13.0 -e ".[executorch]"
	$(BIN)/python -m pytest tests/test_deploy_formats.py tests/test_c_export.py tests/test_stream.py -m "slow or not slow"

# Benchmarks (benchmarks/results/): distillation quality on the bundled sets (budgeted for <90 min on 2 idle cores;
# QUICK=1 for the minutes-long version), and what distillation costs over plain training (minutes).
bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py $(if $(QUICK),--quick)

# torchdistill (the anchor compared against) installs without its dependencies; offline, the comparison is skipped.
bench-speed: $(STAMP)
	-$(BIN)/pip install --quiet --no-deps torchdistill
	$(BIN)/python benchmarks/speed.py
bench-kd-recipe: $(STAMP) ; OMP_NUM_THREADS=1 $(BIN)/python benchmarks/kd_recipe_heldout.py  # which plain-KD setting recipes/kd.yaml ships (~45 min)

clean:
	rm -rf $(VENV) runs .pytest_cache

.PHONY: fuzz reliability
# Reliability (docs/reliability.md): `make fuzz` runs 1,000 seeded fuzz cases (SEED=n for fresh ones) and prints the
# figures and every distinct failure; `make reliability` also runs 1,000 fresh cases (another seed: is anything
# new?) and the fault tests' long variants, and writes the figures table into docs/reliability.md.
SEED ?= 16
fuzz: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/reliability_figures.py --cases 1000 --seed $(SEED)

reliability: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/reliability_figures.py --cases 1000 --seed $(SEED) --fresh-seed 2026 --faults --write-doc docs/reliability.md

# --jobs 1 against the default --jobs auto: make demo's run (~8 min) and a sweep's trials (~12 min) on this machine.
bench-parallel: $(STAMP)
	$(BIN)/python benchmarks/parallel_seeds.py
	$(BIN)/python benchmarks/parallel_sweep.py

# Holdout vs cross-validation verdicts on two real sets and a synthetic subject set, and LOSO's cost (~40 min).
bench-cv: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/cross_validation.py

# Preparing a full-size archive in PAMAP2's format (3.85 M rows, synthetic, ~1.7 GiB in runs/): time and peak memory.
bench-pamap2: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/pamap2_prepare.py

# Training from memory-mapped windows (data.storage: mapped) vs in memory, on that archive: peak memory and time.
bench-mapped: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/mapped_storage.py

# edgedistill tune (budget: 10 measured KD runs) vs KD at defaults and quality.md's best fixed method; QUICK=1: a fifth of the epochs.
bench-tune: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/tune.py $(if $(QUICK),--quick)

# The other toolkits' baselines (issue 23) on the protocol's seven sets, FSP/KD-SVD with a channel-matched teacher, then
# each baseline page's measured table (~3 h on 2 cores from an empty runs/quality).
BASELINES := kd nst cc ickd mlkd logit_std dist_plus fsp kdsvd vid ofd reviewkd ft ab fitnet_staged
bench-baselines: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/quality.py --jobs 1 --methods $(BASELINES) --sizes 1 --name quality_baselines
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/matched_channels.py
	$(BIN)/python benchmarks/loss_pages.py

# The seed methods as described vs their former forms (issue 24) at the protocol's budget, then their pages' tables.
bench-fidelity: $(STAMP)
	for s in a b c; do OMP_NUM_THREADS=1 $(BIN)/python benchmarks/seed_fidelity_$$s.py --protocol || exit 1; done
	$(BIN)/python benchmarks/fidelity_pages.py

# On a machine with a CUDA GPU: the GPU tests and timings (benchmarks/results/gpu.md); DRY=1 runs the CPU path.
gpu: $(STAMP)
	bash benchmarks/gpu.sh $(if $(DRY),--dry-run)

# teacher.select best / last / swa with recipes/kd.yaml on ArrowHead and PickupGesture (~5 min).
bench-select: $(STAMP)
	$(BIN)/python benchmarks/teacher_select.py
