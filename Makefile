# The two commands of the README: `make run` and `make test`. Both work as root on a fresh
# Debian machine with a Rust toolchain; `make test` installs what the tests need.

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive

.PHONY: run build test test-deps lint fmt crds check clean

## run: the standalone sidecar on deploy/examples/, in front of a demo IRIS on :52773
run: build
	./scripts/run-demo.sh

build:
	$(CARGO) build --release --locked --bin tollgate --example demo_upstream

## test: every test, after installing what they need (redis-server)
test: test-deps lint
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked

test-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (the token store tests run against a real one)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }
	@# The packaged service is not needed: the tests start their own servers on free ports.
	@command -v systemctl >/dev/null 2>&1 && $(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || true

## lint: formatting, clippy, and the generated CRDs
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ from the Rust types
crds:
	$(CARGO) run -q --locked -- crdgen > crds/tollgate.yaml

clean:
	$(CARGO) clean
