# Two commands matter: `make lab` and `make test` (see README.md). `make test-fast` needs no root and no lab.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONPATH := $(CURDIR)/.collections
INVENTORY ?= inventories/lab
# SCHEDULER=pbs: the PBS lab (inventories/lab-pbs, OpenPBS built from PBS_SOURCE) on the same bridge.
SCHEDULER ?= slurm
ifeq ($(SCHEDULER),pbs)
INVENTORY := inventories/lab-pbs
export DASKHPC_LAB_INVENTORY := inventories/lab-pbs
endif
PBS_SOURCE ?= $(lastword $(sort $(wildcard ../shared/vendor/openpbs-*.tar.gz)))
export DASKHPC_PBS_SOURCE := $(abspath $(PBS_SOURCE))
COLLECTION_LINK := .collections/ansible_collections/onprem/daskhpc
# One lock per lab: every target that touches a lab holds that lab's lock, unless the caller already
# holds it for a whole run (.ci/run sets DASKHPC_LAB_LOCKED). The SLURM lab and the PBS lab have
# disjoint hosts, so each has its own lock and both can be used at once. `lab-destroy` of the SLURM
# lab removes everything (both labs, keys, bridge), so it holds both locks.
SLURM_LAB_LOCK := /tmp/daskhpc-lab.lock
PBS_LAB_LOCK := /tmp/daskhpc-lab-pbs.lock
LAB_LOCK := $(if $(filter pbs,$(SCHEDULER)),$(PBS_LAB_LOCK),$(SLURM_LAB_LOCK))
WITH_LAB := $(if $(DASKHPC_LAB_LOCKED),,flock $(LAB_LOCK))
WITH_ALL_LABS := $(if $(DASKHPC_LAB_LOCKED),,$(if $(filter pbs,$(SCHEDULER)),flock $(PBS_LAB_LOCK),\
  flock $(SLURM_LAB_LOCK) flock $(PBS_LAB_LOCK)))

.PHONY: lab lab-up lab-down lab-destroy test test-fast test-lab test-pbs venv lint sanity unit converge build bench audit

venv: $(VENV)/.installed $(COLLECTION_LINK)

# python3-venv is missing on a bare Debian 12; install it only when needed.
$(VENV)/.installed: requirements.txt pyproject.toml
	@python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

# The lab's hosts (lab/nspawn_lab.py): build the image if needed, boot them, wait for SSH.
lab-up: venv
	$(WITH_LAB) $(PY) lab/nspawn_lab.py up

lab-down: venv
	$(WITH_LAB) $(PY) lab/nspawn_lab.py down

# Removes everything the lab made: hosts, image, keys, bridge (SCHEDULER=pbs: the PBS lab's own only).
lab-destroy: venv
	$(WITH_ALL_LABS) $(PY) lab/nspawn_lab.py destroy

# Set-up plus the main job: hosts, converge, a short burst demo, how to log in.
lab: lab-up
	$(WITH_LAB) ansible-playbook -i $(INVENTORY) playbooks/lab.yml
	$(WITH_LAB) ansible-playbook -i $(INVENTORY) playbooks/demo.yml

converge: lab-up
	$(WITH_LAB) ansible-playbook -i $(INVENTORY) playbooks/lab.yml

lint: venv
	ruff check .
	ansible-lint --profile production playbooks/ roles/

# ansible-test needs the collection under .../ansible_collections/onprem/daskhpc as a real path (the
# .collections link resolves back here), so it runs on a copy of the tracked files. Its pip bootstrap
# comes from tests/sanity/get_pip_offline.py where ci-files.testing.ansible.com is out of reach.
SANITY_ROOT := build/sanity
SANITY_DIR := $(SANITY_ROOT)/ansible_collections/onprem/daskhpc
SANITY_HOME := $(CURDIR)/$(SANITY_ROOT)/home
ANSIBLE_TEST := cd $(SANITY_DIR) && HOME=$(SANITY_HOME) $(CURDIR)/$(VENV)/bin/ansible-test sanity --python 3.11 --color no
# Every sanity test over every file, except pylint: it runs over the Ansible content (plugins/) only, about
# 45 s instead of 2.5-4.5 minutes over daskhpc/, tests/, bench/ and lab/ too, which ruff lints in `make lint`.
# `make sanity SANITY_PYLINT_PATHS=` runs pylint over everything (clean too; run it after large changes).
SANITY_PYLINT_PATHS ?= plugins/
sanity: venv
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR) $(SANITY_HOME)/.ansible/test/cache
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(SANITY_DIR)
	cp tests/sanity/get_pip_offline.py $(SANITY_HOME)/.ansible/test/cache/get_pip_24_2.py
	cd $(SANITY_DIR) && git init -q && git add -A
	$(ANSIBLE_TEST) --skip-test pylint
	$(ANSIBLE_TEST) --test pylint $(SANITY_PYLINT_PATHS)

unit: venv
	pytest -q tests/unit

# The fast tier: no root, no lab (lint, ansible-test sanity, unit tests, alert-rule tests).
test-fast: venv lint sanity
	pytest -q -p no:cacheprovider tests/unit tests/promtool

# The lab tier: the session fixture converges the lab, then the integration tests run against it.
test-lab: venv lab-up
	pytest -q -p no:cacheprovider --durations=25 tests/integration; rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

# The PBS tier (tests/pbs): the PBS lab, when the OpenPBS source is present.
test-pbs: venv
	@if [ -z "$(PBS_SOURCE)" ]; then echo "test-pbs: no OpenPBS source (PBS_SOURCE); skipped"; else \
	  $(MAKE) lab-up SCHEDULER=pbs && DASKHPC_LAB_INVENTORY=inventories/lab-pbs \
	  pytest -q -p no:cacheprovider --durations=10 tests/pbs; fi

# Every test: the fast tier, then the lab tier and the PBS tier (when the OpenPBS source is present) side by
# side: the two labs share no host and each has its own lock, and their tests mostly wait on their batch
# systems, so together they take about as long as the longer one (CI has 90 minutes).
test: test-fast
	$(MAKE) --no-print-directory -j2 --output-sync=target test-lab test-pbs

build: venv
	ansible-galaxy collection build --force --output-path build/

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

audit: venv
	ansible-playbook -i $(INVENTORY) playbooks/audit.yml
