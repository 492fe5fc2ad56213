#!/usr/bin/env bash
# Builds helm (Helm v3) and helm4 (Helm v4) from the Go module proxy at the
# versions pinned in charts/tools/go.mod and charts/tools/helm4/go.mod, with
# the Go of scripts/go-env.sh, into .testbed/bin/helm and .testbed/bin/helm4
# (git-ignored). Each is reused while its go.mod, go.sum and these scripts are
# unchanged and the binary reports the pinned version. See docs/helm.md.
#
#   scripts/helm.sh          build both if needed, print the path of helm
#   scripts/helm.sh --force  rebuild both
#   DEVENV_HELM_BIN=dir      build into dir instead of .testbed/bin
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEVENV_HELM_BIN:-$root/.testbed/bin}"
# shellcheck source=go-env.sh
. "$root/scripts/go-env.sh"
force="${1:-}"

# build NAME MAJOR TOOLS: builds helm.sh/helm/vMAJOR/cmd/helm, pinned by
# TOOLS/go.mod, into $bin/NAME unless the one there is current.
build() {
  local name="$1" major="$2" tools="$3" module="helm.sh/helm/v$2"
  local version stamp current
  version="$(awk -v m="$module" '$1 == "require" && $2 == m { print $3; exit }
                                 $1 == m { print $2; exit }' "$tools/go.mod")"
  stamp="$(cat "$tools/go.mod" "$tools/go.sum" "$root/scripts/go-env.sh" "$0" | sha256sum | cut -c1-16)"
  current="$("$bin/$name" version --template '{{.Version}}' 2>/dev/null || true)"
  if [[ "$force" != "--force" && -x "$bin/$name" && "$current" == "$version" \
        && "$(cat "$bin/.$name-stamp" 2>/dev/null)" == "$stamp" ]]; then
    return 0
  fi
  use_go
  mkdir -p "$bin"
  local ldflags="-s -w -X $module/internal/version.version=$version"
  ldflags+=" -X $module/internal/version.gitTreeState=clean"
  if [[ "$major" == 3 ]]; then
    # The Kubernetes release helm's client libraries come from: Helm 3's
    # helm template and helm lint assume it as the cluster's version
    # (.Capabilities.KubeVersion, deprecation checks) only when told, instead
    # of its built-in default of 1.20. Helm 4 reads it from its own build info.
    local k8s minor pkg
    k8s="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$tools/go.mod")"
    minor="${k8s#v0.}"; minor="${minor%%.*}"
    for pkg in "$module/pkg/lint/rules" "$module/pkg/chartutil"; do
      ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
    done
  fi
  local start
  start=$(date +%s)
  echo "helm: building $name $version" >&2
  # -mod=mod: go.sum is checked in; the modules come from the proxy or ~/go.
  (cd "$tools" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" \
    -o "$bin/$name.tmp" "$module/cmd/helm" >&2)
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" > "$bin/.$name-stamp"
  echo "helm: built $name $version in $(( $(date +%s) - start ))s" >&2
}

build helm 3 "$root/charts/tools"
build helm4 4 "$root/charts/tools/helm4"
echo "$bin/helm"
