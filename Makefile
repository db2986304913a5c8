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

.PHONY: setup run cluster train test lint pytest stories bench bench-nlu bench-turns bench-foresight bench-first-utterance \
	bench-risk bench-risk-quality bench-risk-latency bench-voice bench-reminders bench-wecom bench-phone bench-ops-swap \
	bench-ops-inbox shell clean

setup:
	@tools/ensure-apt.sh
	@tools/ensure-venv.sh .venv $(PYTHON311) requirements.lock
	@tools/ensure-venv.sh .venv-rasa $(PYTHON310) requirements-rasa.lock
	@install -m 0755 tools/bankbot-launcher.sh .venv/bin/bankbot

train: setup
	$(PY) -m bankbot train

run: setup
	BANKBOT_DEV_LOGIN=1 $(PY) -m bankbot run

# The cluster profile (docs/cluster.md): PostgreSQL, Redis, RabbitMQ and nginx started by the project under
# var/cluster/, two Rasa servers, two action servers, two gateways behind nginx, two reminder workers and the event
# relay. Options through CLUSTER_ARGS, e.g. make cluster CLUSTER_ARGS="--rasa 1 --port 8090".
CLUSTER_ARGS ?=
cluster: setup
	$(PY) -m bankbot train
	BANKBOT_DEV_LOGIN=1 $(PY) -m bankbot cluster run $(CLUSTER_ARGS)

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

bench: bench-nlu bench-turns bench-foresight bench-first-utterance bench-risk bench-voice bench-reminders bench-wecom \
	bench-phone bench-ops-swap bench-ops-inbox

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

# Transfer risk control on a simulated bank of 20,000 customers: detection at fixed false-alarm rates for
# the rules, the learned score and both, per scam pattern, then the same with an event vocabulary the rules
# file does not know (only the learned score can read it). Reports in reports/risk/.
bench-risk-quality: setup
	$(PY) -m bankbot risk simulate --out var/risk/sim-20k --customers 20000 --seed 1
	$(PY) -m bankbot risk evaluate --data var/risk/sim-20k --json reports/risk/quality-20k.json
	$(PY) -m bankbot risk train --data var/risk/sim-20k --out var/risk/model-20k
	$(PY) -m bankbot risk simulate --out var/risk/sim-20k-alt --customers 20000 --seed 2 --vocabulary alt
	$(PY) -m bankbot risk evaluate --data var/risk/sim-20k-alt --json reports/risk/quality-20k-alt.json

# One risk decision end to end (signals read from the database, features, rules, the learned score, the audit
# row), for a busy customer (300 transfers in 120 days, 400 events in the week) and a typical one, with the
# model trained by bench-risk-quality.
bench-risk-latency: setup
	$(PY) -m bankbot bench risk-latency --decisions 2000
	$(PY) -m bankbot bench risk-latency --decisions 2000 --model var/risk/model-20k
	$(PY) -m bankbot bench risk-latency --decisions 2000 --transfers 60 --events 80 --model var/risk/model-20k

bench-risk: bench-risk-quality bench-risk-latency

# Speech with the configured Vosk model (else the Korean test model): real-time factor per stream at 8 and
# 16 kHz and how many streams stay under real time on this machine, memory, grammar accuracy on espeak-ng
# speech; bad input against the WebSocket endpoint (30-minute stream included); end of speech to the first
# reply audio over 100 turns, with and without the Rasa turn; the grammar thresholds' own measurement.
bench-voice: setup
	$(PY) -m bankbot bench asr --seconds 20 --max-streams 8
	$(PY) -m bankbot bench asr-robustness --long-minutes 30
	$(PY) -m bankbot train
	$(PY) -m bankbot bench voice-latency --turns 100
	$(PY) -m pytest -q -m slow -s tests/voice/test_grammar.py

# 1,000,000 reminders planned, then dispatched to a counting sender by 1, 2 and 4 worker processes, on SQLite
# and on a throwaway PostgreSQL: reminders per second, p99 lateness, lost and duplicated (must be 0). Then the
# chaos run: workers killed and PostgreSQL restarted while they dispatch under the rules' policy to customers
# in six zones; sent in quiet hours, lost and recorded twice must be 0 (deferred to the window are counted).
bench-reminders: setup
	$(PY) -m bankbot bench reminders --reminders 1000000 --workers 1,2,4
	$(PY) -m bankbot bench reminders-chaos --reminders 100000 --workers 4 --seconds 120

# WeChat Work callbacks from 200 concurrent simulated users: acknowledgement p95 while Rasa is busy, reply latency,
# throughput, duplicates under retry storms (must be 0); with the real stack, then with a stand-in for Rasa.
bench-wecom: setup
	$(PY) -m bankbot train
	$(PY) -m bankbot bench wecom --users 200 --out reports/wecom/bench.json
	$(PY) -m bankbot bench wecom --users 200 --fake-rasa --out reports/wecom/bench-stand-in.json

# The SIP phone line with the gateway in its own process and real recognition (the Korean Vosk model): concurrent
# calls sustained without late frames (with a stand-in for Rasa; then the same without recognition, to show what
# the transport alone carries), end of speech to the first reply audio with Rasa and the action server, and 1,000
# short calls one after another with the gateway's tasks, descriptors and memory sampled (must not grow).
bench-phone: setup
	$(PY) -m bankbot train
	$(PY) -m bankbot bench phone --out reports/phone/bench.json
	$(PY) -m bankbot bench phone --part A --no-asr --steps 20,40,60,80,120,160 --calls-max 160 \
		--out reports/phone/capacity-no-asr.json

# Customers chat through the gateway while the console's promotion path (PUT /model) swaps models back and
# forth: 0 failed turns, latency during and outside the swaps (docs/benchmarks.md).
bench-ops-swap: setup
	$(PY) -m bankbot bench ops-swap --swaps 6 --customers 4 --out reports/ops/swap-bench.json

# The ops console with 100,000 customer messages in the tracker store: the first inbox page (which syncs them all into
# the indexed ops_inbox table), then inbox pages under several filters, first to last page, and the dashboard, over
# HTTP against the gateway in its own process; p50/p95 per page, every inbox page's p95 must stay under 1 s. On SQLite,
# then with the bank and the tracker store on a throwaway PostgreSQL.
bench-ops-inbox: setup
	$(PY) -m bankbot bench ops-inbox --messages 100000 --out reports/ops/inbox-bench.json
	$(PY) -m bankbot bench ops-inbox --messages 100000 --postgres --out reports/ops/inbox-bench-postgres.json

bench-first-utterance: setup
	$(PY) -m bankbot train
	$(PY) -m bankbot bench first-utterance

stories: setup
	$(PY) -m bankbot test stories

clean:
	rm -rf var models results reports .pytest_cache .mypy_cache .ruff_cache
