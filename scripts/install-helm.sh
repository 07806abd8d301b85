#!/usr/bin/env bash
# Puts the `helm` binary that the chart tests use (tests/integration/test_helm_chart.py) in
# .local/bin/helm, built from the Go module proxy. Skipped when a helm is already on PATH or
# in .local/bin. Needs Go >= 1.26 (helm v3.22 go.mod), or Go >= 1.21 with GOTOOLCHAIN=auto, which
# fetches that toolchain from the module proxy; the build takes a few minutes on 2 cores.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
cd "$(dirname "$0")/.."
dest="$PWD/.local/bin"

if command -v helm >/dev/null 2>&1; then
  echo "install-helm: using $(command -v helm) ($(helm version --short 2>/dev/null || echo '?'))"
  exit 0
fi
if [ -x "$dest/helm" ]; then
  echo "install-helm: using $dest/helm ($("$dest/helm" version --short 2>/dev/null || echo '?'))"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-helm: no helm and no Go toolchain; install Go (https://go.dev/doc/install) or helm itself" >&2
  exit 1
fi
mkdir -p "$dest"
echo "install-helm: building helm $HELM_VERSION with $(go version | cut -d' ' -f3) into $dest"
# auto: an older Go (>= 1.21) fetches the toolchain helm's go.mod asks for; a new one builds.
GOTOOLCHAIN=auto GOBIN="$dest" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
"$dest/helm" version --short
