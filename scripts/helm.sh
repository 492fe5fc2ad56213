#!/usr/bin/env bash
# Builds helm (Helm v3) from the Go module proxy at the version pinned in
# charts/tools/go.mod, with the Go of scripts/go-env.sh, into .testbed/bin/helm
# (git-ignored). Reused while charts/tools/go.mod, go.sum and these scripts are
# unchanged and the binary reports the pinned version. See docs/helm.md.
#
#   scripts/helm.sh          build if needed, print the path of helm
#   scripts/helm.sh --force  rebuild
#   DEVENV_HELM_BIN=dir      build into dir instead of .testbed/bin
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEVENV_HELM_BIN:-$root/.testbed/bin}"
tools="$root/charts/tools"
# shellcheck source=go-env.sh
. "$root/scripts/go-env.sh"
version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v3" { print $3; exit }
                $1 == "helm.sh/helm/v3" { print $2; exit }' "$tools/go.mod")"
stamp="$(cat "$tools/go.mod" "$tools/go.sum" "$root/scripts/go-env.sh" "$0" | sha256sum | cut -c1-16)"

current() { "$bin/helm" version --template '{{.Version}}' 2>/dev/null || true; }

if [[ "${1:-}" == "--force" || ! -x "$bin/helm" || "$(current)" != "$version" \
      || "$(cat "$bin/.helm-stamp" 2>/dev/null)" != "$stamp" ]]; then
  use_go
  mkdir -p "$bin"
  cd "$tools"
  # The Kubernetes release helm's client libraries come from: helm template
  # and helm lint assume it as the cluster's version (.Capabilities.KubeVersion,
  # deprecation checks) instead of Helm's built-in default of 1.20.
  k8s="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' go.mod)"
  minor="${k8s#v0.}"; minor="${minor%%.*}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  start=$(date +%s)
  echo "helm: building helm $version (Kubernetes 1.$minor libraries)" >&2
  # -mod=mod: go.sum is checked in; the modules come from the proxy or ~/go.
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" \
    -o "$bin/helm.tmp" helm.sh/helm/v3/cmd/helm >&2
  mv "$bin/helm.tmp" "$bin/helm"
  echo "$stamp" > "$bin/.helm-stamp"
  echo "helm: built helm $version in $(( $(date +%s) - start ))s" >&2
fi
echo "$bin/helm"
