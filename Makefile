# The two commands of the README, plus helpers. Every target does its own set-up
# (tools/setup_env.sh is idempotent and takes seconds once the environment exists).
PY := .venv/bin/python
TASK ?= cls
MODEL ?=
ARGS ?=

.PHONY: setup test test-fast bench run tables regenerate curves clean

setup:
	bash tools/setup_env.sh

test: setup
	$(PY) -m pytest tests

# The main job: every method on the classification default (ResNet-20 on Fashion-MNIST), W4A4.
bench: setup
	$(PY) tools/run_task.py --task cls --model resnet20 $(ARGS)

run: setup
	$(PY) tools/run_task.py --task $(TASK) $(if $(MODEL),--model $(MODEL)) $(ARGS)

clean:
	rm -rf work_dirs .pytest_cache

# The full grid (resumable), then plots, then tables (which link the plots that exist).
regenerate: setup
	$(PY) tools/regenerate.py --no-tables $(ARGS)
	$(PY) tools/make_plots.py
	$(PY) tools/make_tables.py

tables: setup
	$(PY) tools/make_tables.py

# ZAQ's budget curve (metric against iteration) for a task's default model, 3 seeds.
curves: setup
	$(PY) tools/budget_curve.py --task $(TASK) $(if $(MODEL),--model $(MODEL)) --methods zaq --bits 4 \
		--seeds 0,1,2 --points 0,10,20,40,100,200,400 $(ARGS)

# The tests without the slow ones (the markers are declared in setup.cfg).
test-fast: setup
	$(PY) -m pytest tests -m "not slow and not subprocess"
