#!/usr/bin/env bash
# Builds the test bed: a real kube-apiserver and etcd, compiled from the Go
# module proxy at the versions pinned in testbed/go.mod (see docs/testbed.md,
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

# Go: the machine's own when it is recent enough, otherwise the pinned
# toolchain from the Go module proxy (the same zip `GOTOOLCHAIN` would fetch),
# checked against its SHA-256.
go_version="1.26.8"
go_zip_sha256="30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7"
go_ok() { command -v go >/dev/null && go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; }
if ! go_ok; then
  toolchain="$root/.testbed/go"
  if [[ ! -x "$toolchain/bin/go" ]]; then
    echo "testbed: installing Go $go_version from the Go module proxy" >&2
    proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%,*}"
    zip="$root/.testbed/go.zip"
    mkdir -p "$root/.testbed"
    curl -fsSL -o "$zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$go_version.linux-amd64.zip"
    echo "$go_zip_sha256  $zip" | sha256sum -c --quiet - >&2
    rm -rf "$root/.testbed/go-unpack" && mkdir -p "$root/.testbed/go-unpack"
    unzip -q "$zip" -d "$root/.testbed/go-unpack"
    rm -rf "$toolchain" && mv "$root/.testbed/go-unpack/golang.org/toolchain@v0.0.1-go$go_version.linux-amd64" "$toolchain"
    chmod +x "$toolchain"/bin/* "$toolchain"/pkg/tool/*/* 2>/dev/null || true
    rm -rf "$zip" "$root/.testbed/go-unpack"
  fi
  export PATH="$toolchain/bin:$PATH" GOTOOLCHAIN=local
fi
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
