# Everything installs into .venv from PyPI, so these work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.depfakes-installed

.PHONY: install example test test-psycopg2 lint docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: the example app's test suite, using every dependency through depfakes.
example: install
	$(PY) -m pytest examples

# The project's own tests: most in parallel, then those that share host-wide state
# (the Docker engine, `depfakes down --all`) one after another.
test: install
	$(PY) -m pytest -n 2 -m "not serial"
	$(PY) -m pytest -m serial
	$(MAKE) test-psycopg2

# A project that tests on psycopg2 (no psycopg 3 installed): depfakes runs on psycopg2,
# and so does Django. A venv of its own, since the dev extra brings psycopg 3.
PG2_VENV := .venv-psycopg2
$(PG2_VENV)/.depfakes-installed: pyproject.toml
	python3 -m venv $(PG2_VENV)
	$(PG2_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PG2_VENV)/bin/python -m pip install --quiet -e ".[postgres-psycopg2]" psycopg2-binary \
		pytest-xdist "django>=4.2" "pytest-django>=4.6" "dj-database-url>=2.1"
	touch $@

test-psycopg2: $(PG2_VENV)/.depfakes-installed
	DEPFAKES_TEST_PSYCOPG2=1 $(PG2_VENV)/bin/python -m pytest -n 2 tests/test_psycopg2.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The docs site, strictly: a broken link or a missing page fails the build.
docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: install
	$(PY) benchmarks/fakes.py
	$(PY) benchmarks/postgres.py   # needs Docker and DEPFAKES_POSTGRES_IMAGE

clean:
	rm -rf $(VENV) $(PG2_VENV) .mypy_cache .ruff_cache .pytest_cache site
