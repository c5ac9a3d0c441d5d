# The two commands of the README: `make demo` (the main job) and `make test`.
.PHONY: bootstrap demo test lint bench

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	@.venv/bin/trustauthority demo

test: bootstrap
	@.venv/bin/pytest

lint: bootstrap
	@.venv/bin/ruff check . && .venv/bin/mypy

bench: bootstrap
	@.venv/bin/python bench/run.py
