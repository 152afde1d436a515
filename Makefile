# Two commands: `make setup` once, `make test` for every gate and test. The rest are shortcuts.
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.work/collections
.PHONY: setup test test-fast lint sanity unit cluster-up cluster-down cluster-status cluster-logs build render bench demo demo-down images

setup:
	scripts/setup

test:
	scripts/test

# The stack running for real on the local cluster's real node (after `make setup` alone).
demo:
	scripts/demo

demo-down:
	scripts/demo down

# The local test images (scripts/setup builds them too; cached, rebuilt when their inputs change).
images:
	scripts/images build

# Tests only, without yamllint/ansible-lint/sanity (still starts the local cluster).
test-fast:
	scripts/test --skip-gates

lint:
	.work/venv/bin/yamllint --strict .
	.work/venv/bin/ansible-lint --offline --profile production

sanity:
	scripts/sanity

unit:
	.work/venv/bin/pytest tests/unit

cluster-up:
	scripts/cluster up

cluster-down:
	scripts/cluster down

cluster-status:
	scripts/cluster status

cluster-logs:
	scripts/cluster logs

build:
	.work/venv/bin/ansible-galaxy collection build --force --output-path .work/dist .
