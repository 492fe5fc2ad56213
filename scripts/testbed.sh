#!/usr/bin/env bash
# Builds the test bed: a real kube-apiserver and etcd, compiled from the Go
# module proxy at the versions pinned in testbed/go.mod (see the README,
# "The test bed"). The binaries go to .testbed/bin (git-ignored) and are reused
# while testbed/go.mod and testbed/go.sum are unchanged.
#
#   scripts/testbed.sh          build if needed, print the bin directory
#   scripts/testbed.sh --force  rebuild
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DEVENV_TESTBED_BIN:-$root/.testbed/bin}"
stamp="$(cat "$root/testbed/go.mod" "$root/testbed/go.sum" | sha256sum | cut -c1-16)"

if [[ "${1:-}" != "--force" && -x "$bin/kube-apiserver" && -x "$bin/etcd" \
      && "$(cat "$bin/.stamp" 2>/dev/null)" == "$stamp" ]]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "testbed: Go is needed to build kube-apiserver and etcd" >&2; exit 1; }
mkdir -p "$bin"
cd "$root/testbed"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
# -trimpath and stripped symbols: smaller binaries and a faster link on 2 cores.
go build -trimpath -ldflags='-s -w' -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2
go build -trimpath -ldflags='-s -w' -o "$bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
echo "$stamp" > "$bin/.stamp"
echo "testbed: built etcd and kube-apiserver in $(( $(date +%s) - start ))s" >&2
echo "$bin"
