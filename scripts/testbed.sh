#!/usr/bin/env bash
# Builds the test bed: a real kube-apiserver and etcd, compiled from the Go
# module proxy at the versions pinned in testbed/go.mod (see docs/testbed.md),
# then the node's pieces (scripts/testbed-node.sh build:
# containerd, kubelet, controller-manager, images...; docs/testbed-node.md).
# The binaries go to .testbed/bin (git-ignored) and are reused while
# testbed/go.mod, testbed/go.sum and these scripts are unchanged.
#
#   scripts/testbed.sh          build if needed, print the bin directory
#   scripts/testbed.sh --force  rebuild
#   DEVENV_TESTBED_NODE=0 scripts/testbed.sh   the API server and etcd only
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEVENV_TESTBED_BIN:-$root/.testbed/bin}"
# shellcheck source=go-env.sh
. "$root/scripts/go-env.sh"
stamp="$(cat "$root/testbed/go.mod" "$root/testbed/go.sum" "$root/scripts/go-env.sh" "$0" \
  | sha256sum | cut -c1-16)"

if [[ "${1:-}" == "--force" || ! -x "$bin/kube-apiserver" || ! -x "$bin/etcd" \
      || "$(cat "$bin/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  use_go
  mkdir -p "$bin"
  cd "$root/testbed"
  export CGO_ENABLED=0 GOFLAGS=-mod=readonly
  start=$(date +%s)
  # -trimpath and stripped symbols: smaller binaries and a faster link on 2 cores.
  go build -trimpath -ldflags='-s -w' -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2
  go build -trimpath -ldflags="$(k8s_ldflags)" -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
  echo "$stamp" > "$bin/.stamp"
  echo "testbed: built etcd and kube-apiserver in $(( $(date +%s) - start ))s" >&2
fi
if [[ "${DEVENV_TESTBED_NODE:-1}" != 0 ]]; then
  "$root/scripts/testbed-node.sh" build ${1:+"$1"} >&2
fi
echo "$bin"
