# Sourced by scripts/testbed.sh and scripts/testbed-node.sh: puts a Go of at
# least 1.26 on PATH. The machine's own when it is recent enough, otherwise
# the pinned toolchain from the Go module proxy (the same zip `GOTOOLCHAIN`
# would fetch), checked against its SHA-256, unpacked into .testbed/go.
# Expects $root (the repository).
go_version="1.26.8"
go_zip_sha256="30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7"
go_ok() { command -v go >/dev/null && go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; }
use_go() {
  go_ok && return 0
  local toolchain="$root/.testbed/go"
  if [[ ! -x "$toolchain/bin/go" ]]; then
    echo "testbed: installing Go $go_version from the Go module proxy" >&2
    local proxy="${GOPROXY:-https://proxy.golang.org}"; proxy="${proxy%%,*}"
    local zip="$root/.testbed/go.zip"
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
}

# -ldflags that stamp the Kubernetes release of testbed/go.mod into a
# Kubernetes binary (otherwise it reports v0.0.0-master+$Format:%H$, which
# kubectl and version checks cannot parse).
k8s_ldflags() {
  local version major minor date
  version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$root/testbed/go.mod")"
  major="${version#v}"; major="${major%%.*}"
  minor="${version#v*.}"; minor="${minor%%.*}"
  date="$(date -u -d "@$(stat -c %Y "$root/testbed/go.mod")" +%Y-%m-%dT%H:%M:%SZ)"
  local flags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}
