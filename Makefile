# The two README commands: `make demo` and `make test`. Both create or update .venv first.
.PHONY: setup demo test test-fast lint defs-validate clean-state lock

setup:
	@bash scripts/bootstrap.sh

demo: setup
	.venv/bin/mlops demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

defs-validate: setup
	.venv/bin/dagster definitions validate -w workspace.yaml

test: setup
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/python -m pytest

# Unit tier only (pure functions, seconds).
test-fast: setup
	.venv/bin/python -m pytest tests/unit -m "not slow"

clean-state:
	rm -rf .mlops data/raw/*.csv data/quarantine/* data/labels/*.csv

# Rewrite requirements.lock from the venv (after changing pyproject.toml's dependencies).
lock: setup
	@head -4 requirements.lock > requirements.lock.new
	.venv/bin/pip freeze --exclude-editable >> requirements.lock.new
	mv requirements.lock.new requirements.lock
