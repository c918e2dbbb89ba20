# Two commands for a newcomer: `make repro` (whole pipeline on built-in data) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEAM   := $(VENV)/.installed-team

.PHONY: repro test test-fast lint bench bench-quality bench-faces bench-photos bench-features install lock clean team-up team-down

$(BIN)/python:
	$(shell command -v $(PYTHON) || command -v python3) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The tested versions (constraints.txt) pin every package; pyproject.toml keeps the compatible ranges.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# The team extra (PostgreSQL driver, boto3, dvc-s3, moto, MLflow's auth app) for the team-mode tests and
# `make team-up`; `make install` and `make repro` stay without it.
$(TEAM): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,team]'
	touch $@

install: $(STAMP)

repro: $(STAMP)  ## run the whole pipeline (dvc repro) on the built-in digits
	@test -d .git || (git init -q && echo "initialised a git repository (DVC needs one)")
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro
	@echo
	@echo "Done. Next:"
	@echo "  samples/grid.png                  the samples (a class per column for labelled data)"
	@echo "  metrics/eval.json                 FID, KID, classifier score, precision/recall, class accuracy"
	@echo "  source $(VENV)/bin/activate && mlflow ui"
	@echo "                                    then the 'every run' URL above: runs, FID and loss curves, grids"
	@echo "  resgan generate --model models:/resgan@champion --num 64 --out grid.png"
	@echo "  git add dvc.lock metrics plots && git commit -m 'baseline run'   (what dvc metrics diff compares with)"

test: lint $(TEAM)  ## lint (ruff), then the whole test suite; lists the 15 slowest tests (team-mode tests need PostgreSQL)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest --durations=15

lint: $(STAMP)  ## ruff alone: lint and format check (pyproject.toml's [tool.ruff]); make test runs them first
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: $(STAMP)  ## the unit tests only (no pipeline, DVC, server or real training): the inner loop, under 90 s
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -m "not slow" -q

bench: $(STAMP)  ## speed and memory figures -> benchmarks/results/latest.json
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.run

bench-quality: $(STAMP)  ## MNIST plain, tuned, tuned_uncond to 200k images and 10 min; 400 digits at 64x64 without/with DiffAugment 10 min (about 1 h)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.quality

bench-faces: $(STAMP)  ## Yale B faces (RESGAN_FACES or FACES=DIR): 380 and 2,414 photographs, labelled and flat, 10 min each (about 2 h)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.faces $(if $(FACES),--faces $(FACES))

bench-photos: $(STAMP)  ## CIFAR-10 colour photographs (CIFAR10=DIR or RESGAN_CIFAR10): resgan's preset vs a textbook conditional DCGAN at 200k images (about an hour on 2 cores: the scorer 10 min once, resgan 14, the peer 36)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.photos $(if $(CIFAR10),--cifar $(CIFAR10))

bench-features: $(STAMP)  ## do self-supervised features rank quality as the classifier does? (real digits, labels hidden)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.ssl_features

lock:  ## re-resolve the newest versions within pyproject.toml's ranges into constraints.txt
	rm -rf .venv-lock
	$(shell command -v $(PYTHON) || command -v python3) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet '.[test,team]'
	( echo "# The versions the test suite passed with; 'make lock' refreshes this file."; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v -i '^resgan' ) > constraints.txt
	rm -rf .venv-lock

team-up: $(TEAM)  ## PostgreSQL, an S3 server and mlflow server on 127.0.0.1 (foreground; prints the exports)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python tests/services.py up

team-down:  ## stop what team-up started
	$(BIN)/python tests/services.py down

clean:
	rm -rf data/prepared models samples metrics plots
