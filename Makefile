# The two commands of the README: `make run` and `make test`. Both work as root on a fresh
# Debian machine with a Rust toolchain; `make test` installs what the tests need.

CARGO ?= cargo
# A CI run builds once from a clean clone: incremental caches (half of target/'s size) would
# only fill its disk.
ifdef CI
export CARGO_INCREMENTAL := 0
endif
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export DEBIAN_FRONTEND := noninteractive
# Where cargo writes release builds (CARGO_TARGET_DIR when set).
RELEASE_DIR := $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: run build build-sidecar test test-deps lint fmt crds check clean

## run: the standalone sidecar on deploy/examples/, in front of a demo IRIS on :52773
run: build-sidecar
	./scripts/run-demo.sh

## build: the release binary with every subcommand, the image's /usr/local/bin/tollgate
build:
	$(CARGO) build --release --locked --bin tollgate

## build-sidecar: the sidecar-only release binary (no controller, inject, crdgen, nor the
## Kubernetes client) as target/release/tollgate-sidecar, the image's
## /usr/local/bin/tollgate-sidecar that injected pods run, and the demo IRIS of `make run`.
## Cargo writes both builds to target/release/tollgate; this one is moved aside, so that
## name is only ever the full build of `make build` (which has `controller`, `inject`, `crdgen`).
build-sidecar:
	$(CARGO) build --release --locked --no-default-features --bin tollgate --example demo_upstream
	mv -f $(RELEASE_DIR)/tollgate $(RELEASE_DIR)/tollgate-sidecar

## test: every test, after installing what they need (redis-server)
test: test-deps lint
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked
	$(MAKE) chart-test

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
	@# The sidecar-only build (build-sidecar) compiles cleanly too.
	$(CARGO) clippy --all-targets --locked --no-default-features -- -D warnings

fmt:
	$(CARGO) fmt --all

## crds: regenerate crds/ from the Rust types, and the chart's copy (its templates/crds.yaml
## installs and upgrades them from charts/tollgate/files/crds.yaml)
crds:
	$(CARGO) run -q --locked -- crdgen > crds/tollgate.yaml
	cp crds/tollgate.yaml charts/tollgate/files/crds.yaml

## bench: tollgate, nginx and haproxy side by side on loopback (bench/run.sh); writes
## bench/results/ and prints the table. Installs nginx-light, haproxy, wrk, redis-server.
.PHONY: bench
bench:
	CARGO="$(CARGO)" ./bench/run.sh

## image: the container image $(IMAGE) (needs a Docker engine with BuildKit)
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE ?= tollgate:$(VERSION)
DOCKER ?= docker
.PHONY: image chart-test chart-deps deploy
image:
	DOCKER_BUILDKIT=1 $(DOCKER) build --tag $(IMAGE) .

## chart-test: helm lint, schema and render tests of charts/tollgate (Helm v4 as a library)
CHART_VENV := target/chart-venv
chart-test: chart-deps
	cd charts/tests && ../../$(CHART_VENV)/bin/python -m pytest -q -p no:cacheprovider

chart-deps: $(CHART_VENV)/.installed
$(CHART_VENV)/.installed: charts/tests/requirements.txt
	@python3 -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv (the chart tests run in a virtualenv)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	python3 -m venv $(CHART_VENV)
	$(CHART_VENV)/bin/pip install -q -r charts/tests/requirements.txt
	touch $@

## deploy: render deploy/tollgate.yaml from the chart (CRDs included, from `make crds`)
deploy: chart-deps
	$(CHART_VENV)/bin/python charts/tests/render.py > deploy/tollgate.yaml.tmp
	mv deploy/tollgate.yaml.tmp deploy/tollgate.yaml

## fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (60) each, installing cargo-fuzz
## if missing. Not part of `test` (minutes, not seconds). Stable Rust takes cargo-fuzz's nightly
## flags with RUSTC_BOOTSTRAP=1. New inputs go to fuzz/target/corpus/, crashes to fuzz/artifacts/.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $$($(CARGO) fuzz list); do \
	  mkdir -p target/corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target target/corpus/$$target corpus/$$target \
	    -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## e2e-cluster: the cluster tests (#[ignore]d in tests/e2e/cluster.rs) against the cluster
## KUBECONFIG names: Kubernetes 1.28+, RBAC on, kubectl on the PATH. A bare kube-apiserver is
## enough. One test at a time: each runs a controller that watches every namespace. The
## webhook tests need the API server to reach this machine: at 127.0.0.1 (an API server
## running here), or at TOLLGATE_E2E_WEBHOOK_HOST (e.g. 172.18.0.1 for kind). The tokens API
## tests (kubectl get oauthtokens) register an APIService whose Service is an ExternalName
## `localhost`: the API server must run on this machine with the front-proxy flags
## (--requestheader-client-ca-file, --proxy-client-cert-file, --proxy-client-key-file,
## --requestheader-allowed-names, --requestheader-username-headers=X-Remote-User,
## --requestheader-group-headers=X-Remote-Group,
## --requestheader-extra-headers-prefix=X-Remote-Extra-) and without
## --enable-aggregator-routing.
.PHONY: e2e-cluster
e2e-cluster: test-deps
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG to the cluster to test against"; exit 2; }
	$(CARGO) test --locked --test e2e cluster:: -- --ignored --test-threads=1

## bench-controller: the controller at 1,000, 10,000 and 50,000 applications, each at 10, 100
## and 1,000 pods (BENCH_SIZES=10000x1000,... to choose): resident memory, one change's
## recompilation and its time until every stream holds it; writes docs/SCALE.md. Built without
## fat LTO, which would add minutes of linking on two cores.
.PHONY: bench-controller
bench-controller:
	CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 BENCH_DOC=docs/SCALE.md \
		$(CARGO) run --release --locked -p tollgate-controller --example scale

## bench-fanout: one controller on the file source, 100 real sidecar processes on loopback TLS
## streams; p50/p99 of a manifest change until every sidecar serves it (bench/fanout.sh);
## writes bench/results/fanout.md
.PHONY: bench-fanout
bench-fanout:
	CARGO="$(CARGO)" ./bench/fanout.sh

## bench-instructions: user-space instructions per proxied request, counted by valgrind
## (bench/instructions.sh): the figure of `make bench` that this VM's neighbours cannot move
.PHONY: bench-instructions
bench-instructions:
	CARGO="$(CARGO)" ./bench/instructions.sh

## bench-micro: cargo's micro-benchmarks (`cargo bench --locked -p tollgate-api`, divan): the
## client-secret digest the token endpoint verifies; writes bench/results/micro.md
.PHONY: bench-micro
bench-micro:
	CARGO="$(CARGO)" ./bench/micro.sh

clean:
	$(CARGO) clean
