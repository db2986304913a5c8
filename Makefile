# One command to run it (make run), one to test it (make test). Environments and the trained model are cached
# by the hash of their inputs (see tools/ensure-venv.sh and bankbot/training.py).
SHELL := /bin/bash
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PYTHON311 ?= $(PYENV_ROOT)/versions/3.11.7/bin/python
PYTHON310 ?= $(PYENV_ROOT)/versions/3.10.13/bin/python
PY := .venv/bin/python
export RASA_TELEMETRY_ENABLED := false
export SQLALCHEMY_SILENCE_UBER_WARNING := 1
export PYTHONPATH := $(CURDIR)

.PHONY: setup run train test lint pytest stories bench bench-nlu bench-turns bench-foresight bench-first-utterance shell clean

setup:
	@tools/ensure-apt.sh
	@tools/ensure-venv.sh .venv $(PYTHON311) requirements.lock
	@tools/ensure-venv.sh .venv-rasa $(PYTHON310) requirements-rasa.lock
	@install -m 0755 tools/bankbot-launcher.sh .venv/bin/bankbot

train: setup
	$(PY) -m bankbot train

run: setup
	BANKBOT_DEV_LOGIN=1 $(PY) -m bankbot run

shell: setup
	$(PY) -m bankbot shell

lint: setup
	.venv/bin/ruff check bankcore foresight actions channels voice bankbot tests tools
	.venv/bin/mypy
	.venv/bin/lint-imports

pytest: setup
	$(PY) -m bankbot train
	$(PY) -m pytest

test: lint pytest

bench: bench-nlu bench-turns bench-foresight bench-first-utterance

bench-nlu: setup
	$(PY) -m bankbot bench nlu

bench-turns: setup
	$(PY) -m bankbot train
	$(PY) -m bankbot bench turns --turns 200

# Simulate 100,000 customers, train the Transformer, compare it with the baselines and the Bayes-optimal
# posterior, then the single-customer latency of the model it trained.
bench-foresight: setup
	$(PY) -m bankbot bench foresight --customers 100000 --days 60 --seed 1 --model-dir reports/foresight/model
	$(PY) -m bankbot bench foresight-latency --model reports/foresight/model

bench-first-utterance: setup
	$(PY) -m bankbot train
	$(PY) -m bankbot bench first-utterance

stories: setup
	$(PY) -m bankbot test stories

clean:
	rm -rf var models results reports .pytest_cache .mypy_cache .ruff_cache
