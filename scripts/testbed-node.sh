#!/usr/bin/env bash
# The test bed's node: a one-node Kubernetes cluster on this machine, built
# from Debian packages and the Go module proxy only (docs/testbed-node.md).
#
#   scripts/testbed-node.sh build [--force]
#       installs containerd, runc, iptables, ipset, busybox-static; builds
#       kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl
#       (testbed/go.mod), the CNI plugins and kube-router into .testbed/bin,
#       and the pause and busybox images into .testbed/images. Idempotent.
#   scripts/testbed-node.sh image NAME:TAG OUT.tar [--base busybox]
#           [--entrypoint PATH] [--user UID] HOST_FILE:IMAGE_PATH...
#       a docker-archive image of host binaries (their shared libraries
#       copied along, symbols stripped), for `ctr images import`.
#   scripts/testbed-node.sh up [DIR]
#       runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#       containerd, kubelet, kube-proxy and kube-router (the node in a network
#       namespace of its own), imports the images of .testbed/images and
#       DIR/images, writes DIR/admin.kubeconfig and DIR/ready, and tears
#       everything down when its standard input closes (or on INT/TERM).
#       DEVENV_TESTBED_KEEP=1 keeps DIR; DEVENV_TESTBED_KEEP=running also
#       keeps the cluster running until the script is sent TERM.
#   scripts/testbed-node.sh cleanup
#       tears down what a killed `up` left (slots whose lock nobody holds).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
self="$root/scripts/testbed-node.sh"
bin="${DEVENV_TESTBED_BIN:-$root/.testbed/bin}"
images="${DEVENV_TESTBED_IMAGES:-$(dirname "$bin")/images}"
# shellcheck source=go-env.sh
. "$root/scripts/go-env.sh"

cni_version=v1.10.0
kube_router_version=v2.1.0
apt_packages=(containerd runc iptables ipset busybox-static conntrack)
k8s_commands=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)
sandbox_image="registry.k8s.io/pause:3.10"
busybox_image="devenv-testbed/busybox:1"
service_cidr="10.96.0.0/24"
sa_issuer="https://kubernetes.default.svc.cluster.local"
slots=8

log() { echo "testbed-node: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------- build

install_packages() {
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  (( ${#missing[@]} == 0 )) && return 0
  log "installing ${missing[*]} (apt)"
  [[ $(id -u) == 0 ]] || die "installing packages needs root"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# What the build depends on: the modules, the image sources, the pinned
# versions and the build functions themselves (not the rest of this script).
build_stamp() {
  {
    cat "$root/testbed/go.mod" "$root/testbed/go.sum" "$root/scripts/go-env.sh" "$root"/testbed/images/*.c
    declare -p cni_version kube_router_version apt_packages k8s_commands sandbox_image busybox_image
    declare -f build build_images archive busybox_rootfs
  } | sha256sum | cut -c1-16
}

build() {
  local force="${1:-}" stamp start t
  install_packages
  stamp="$(build_stamp)"
  if [[ "$force" != --force && "$(cat "$bin/.node-stamp" 2>/dev/null)" == "$stamp" \
        && -f "$images/pause.tar" && -f "$images/busybox.tar" ]]; then
    return 0
  fi
  use_go
  mkdir -p "$bin/cni" "$images"
  start=$(date +%s)
  local ldflags cmd
  ldflags="$(k8s_ldflags)"
  for cmd in "${k8s_commands[@]}"; do
    t=$(date +%s)
    (cd "$root/testbed" && CGO_ENABLED=0 GOFLAGS=-mod=readonly \
      go build -trimpath -ldflags="$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    log "built $cmd in $(( $(date +%s) - t ))s"
  done
  t=$(date +%s)
  # Outside testbed/go.mod: each is its own module at a pinned version,
  # checked against the checksum database like any module download.
  (cd /tmp && CGO_ENABLED=0 GOFLAGS= GOBIN="$bin/cni" go install -trimpath -ldflags='-s -w' \
    "github.com/containernetworking/plugins/plugins/main/bridge@$cni_version" \
    "github.com/containernetworking/plugins/plugins/main/loopback@$cni_version" \
    "github.com/containernetworking/plugins/plugins/ipam/host-local@$cni_version" \
    "github.com/containernetworking/plugins/plugins/meta/portmap@$cni_version")
  log "built the CNI plugins in $(( $(date +%s) - t ))s"
  t=$(date +%s)
  (cd /tmp && CGO_ENABLED=0 GOFLAGS= GOBIN="$bin" go install -trimpath -ldflags='-s -w' \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$kube_router_version")
  log "built kube-router in $(( $(date +%s) - t ))s"
  build_images
  echo "$stamp" > "$bin/.node-stamp"
  log "node pieces ready in $(( $(date +%s) - start ))s"
}

# A docker-archive tarball (manifest.json, config with diff_ids, one layer)
# of directory $3, as `ctr images import` takes it.
archive() {
  local name="$1" out="$2" rootfs="$3" entrypoint="$4" cmd="$5" user="$6"
  local tmp diff config_sha
  tmp="$(mktemp -d)"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$tmp/layer.tar" .
  diff="$(sha256sum "$tmp/layer.tar" | cut -c1-64)"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Entrypoint":%s,"Cmd":%s,"User":"%s","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$entrypoint" "$cmd" "$user" "$diff" > "$tmp/config.json"
  config_sha="$(sha256sum "$tmp/config.json" | cut -c1-64)"
  mv "$tmp/config.json" "$tmp/$config_sha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$config_sha" "$name" > "$tmp/manifest.json"
  tar -C "$tmp" -cf "$out.part" manifest.json "$config_sha.json" layer.tar
  mv "$out.part" "$out"
  rm -rf "$tmp"
}

busybox_rootfs() {
  local dir="$1" applet
  mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/proc" "$dir/sys" "$dir/dev" "$dir/var/run"
  chmod 1777 "$dir/tmp"
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ -e "$dir/bin/$applet" ]] || ln -s busybox "$dir/bin/$applet"
  done
  cp "$images/netcheck" "$dir/bin/netcheck"
  printf 'root:x:0:0:root:/root:/bin/sh\ndeveloper:x:1000:1000:developer:/home/developer:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dir/etc/passwd"
  printf 'root:x:0:\ndeveloper:x:1000:\nnobody:x:65534:\n' > "$dir/etc/group"
}

build_images() {
  local tmp
  tmp="$(mktemp -d)"
  gcc -static -O2 -o "$images/pause" "$root/testbed/images/pause.c"
  gcc -static -O2 -o "$images/netcheck" "$root/testbed/images/netcheck.c"
  mkdir -p "$tmp/pause"
  cp "$images/pause" "$tmp/pause/pause"
  archive "$sandbox_image" "$images/pause.tar" "$tmp/pause" '["/pause"]' null ""
  busybox_rootfs "$tmp/busybox"
  archive "$busybox_image" "$images/busybox.tar" "$tmp/busybox" null '["sh"]' ""
  rm -rf "$tmp"
  log "built the pause and busybox images"
}

# scripts/testbed-node.sh image NAME:TAG OUT.tar [--base busybox] [--entrypoint P] [--user U] FROM:TO...
image() {
  local name="$1" out="$2"; shift 2
  local base="" entrypoint=null user="" tmp spec from to lib
  while [[ $# -gt 0 && "$1" == --* ]]; do
    case "$1" in
      --base) base="$2" ;;
      --entrypoint) entrypoint="[\"$2\"]" ;;
      --user) user="$2" ;;
      *) die "unknown option $1" ;;
    esac
    shift 2
  done
  tmp="$(mktemp -d)"
  mkdir -p "$tmp/rootfs/tmp" "$tmp/rootfs/etc"
  chmod 1777 "$tmp/rootfs/tmp"
  [[ "$base" == busybox ]] && busybox_rootfs "$tmp/rootfs"
  for spec in "$@"; do
    from="${spec%%:*}"; to="${spec#*:}"
    mkdir -p "$tmp/rootfs$(dirname "$to")"
    strip -o "$tmp/rootfs$to" "$from"
    # Shared libraries and the loader, where the binary looks for them.
    for lib in $(ldd "$from" | grep -oE '/[^ ]+' || true); do
      [[ -e "$tmp/rootfs$lib" ]] && continue
      mkdir -p "$tmp/rootfs$(dirname "$lib")"
      cp -L "$lib" "$tmp/rootfs$lib"
    done
  done
  archive "$name" "$out" "$tmp/rootfs" "$entrypoint" null "$user"
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- up

# Slot N of this machine: network namespace dvn-N, node link 10.201.N.0/30
# (host side .1, node side .2), pod network 10.202.N.0/24, cgroup root
# /devenv-testbed-N. A slot is in use while its lock is held; its record
# names the directory of the `up` that holds it, for cleanup after a kill.
lockdir=/run/lock
slot_lock() { echo "$lockdir/devenv-testbed-node-$1.lock"; }
slot_record() { echo "$lockdir/devenv-testbed-node-$1.dir"; }
cgroup_controllers=(pids cpuset cpuacct cpu memory systemd blkio devices freezer hugetlb net_cls net_prio perf_event rdma misc unified)

# Kills the process named $1 of the cluster in directory $2 (TERM, then KILL
# after $3 seconds): its pid as `start` recorded it in this shell, or else
# (cleaning up after a killed run) in DIR/pids/NAME.
declare -A started_pids=()
stop_process() {
  local name="$1" dir="$2" grace="${3:-5}" pid i file="$2/pids/$1"
  pid="${started_pids[$name]:-}"
  [[ -z "$pid" && -f "$file" ]] && pid="$(cat "$file")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < grace * 10; i++ )); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# Everything of slot $1 whose `up` used directory $2: processes, containers,
# mounts, network namespace, cgroups; the directory itself unless kept.
# Best effort throughout (a subshell without -e): one thing that fails to
# go must not keep the rest running.
teardown() (
  set +e +o pipefail
  local n="$1" dir="$2" keep="${3:-}" name id mnt c
  if [[ -n "$dir" ]]; then
    for name in kube-router kube-proxy kubelet kube-scheduler kube-controller-manager; do
      stop_process "$name" "$dir" 3
    done
    # Containers (runc kills their processes by cgroup), then their shims:
    # each container's init process is a child of its shim.
    local shims=() runc_root
    for c in "$dir"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid; do
      [[ -f "$c" ]] || continue
      id="$(ps -o ppid= -p "$(cat "$c")" 2>/dev/null | tr -d ' ' || true)"
      [[ -n "$id" && "$id" != 1 ]] && shims+=("$id")
    done
    for runc_root in "$dir"/runc/*/; do
      [[ -d "$runc_root" ]] || continue
      for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
        runc --root "$runc_root" kill -a "$id" KILL 2>/dev/null || true
        runc --root "$runc_root" delete -f "$id" 2>/dev/null || true
      done
    done
    stop_process containerd "$dir" 3
    for id in "${shims[@]}"; do
      kill -KILL "$id" 2>/dev/null || true
    done
    stop_process kube-apiserver "$dir" 0
    stop_process etcd "$dir" 0
    # Mounts under the directory (volumes, rootfs, network namespaces of
    # pods), the deepest first.
    for mnt in $(awk '{ print $5 }' /proc/self/mountinfo | grep -F "$dir/" | sort -r); do
      umount -l "$mnt" 2>/dev/null || true
    done
  fi
  # Whatever still runs in the node's cgroups (state files lost, a runc
  # that failed), and the shims those processes are children of.
  local pids=() i
  for c in "${cgroup_controllers[@]}"; do
    [[ -d "/sys/fs/cgroup/$c/devenv-testbed-$n" ]] || continue
    pids+=($(find "/sys/fs/cgroup/$c/devenv-testbed-$n" -name cgroup.procs -exec cat {} + 2>/dev/null))
  done
  for id in $(printf '%s\n' "${pids[@]}" | sort -u); do
    c="$(ps -o ppid= -p "$id" 2>/dev/null | tr -d ' ' || true)"
    if [[ -n "$c" ]] && grep -q containerd-shim "/proc/$c/cmdline" 2>/dev/null; then
      kill -KILL "$c" 2>/dev/null || true
    fi
    kill -KILL "$id" 2>/dev/null || true
  done
  ip netns del "dvn-$n" 2>/dev/null || true
  ip link del "dvn-$n" 2>/dev/null || true
  # Killed processes leave their cgroups a moment later.
  for (( i = 0; i < 50; i++ )); do
    local left=0
    for c in "${cgroup_controllers[@]}"; do
      [[ -d "/sys/fs/cgroup/$c/devenv-testbed-$n" ]] || continue
      find "/sys/fs/cgroup/$c/devenv-testbed-$n" -depth -type d -exec rmdir {} + 2>/dev/null || left=1
    done
    (( left == 0 )) && break
    sleep 0.1
  done
  rm -f "$(slot_record "$n")"
  if [[ -n "$dir" && -z "$keep" ]]; then
    # The test harness's log of this script, kept when the cluster never
    # came up (it says why).
    [[ -f "$dir/ready" ]] && rm -f "$dir.log"
    rm -rf "$dir"
  elif [[ -n "$dir" ]]; then
    log "kept $dir"
  fi
)

# Slots whose lock is free but whose record remains: an `up` was killed.
cleanup_stale() {
  local n fd
  mkdir -p "$lockdir"
  for (( n = 0; n < slots; n++ )); do
    exec {fd}>"$(slot_lock "$n")"
    if flock -n "$fd"; then
      if [[ -f "$(slot_record "$n")" ]] || ip netns list 2>/dev/null | grep -qw "dvn-$n"; then
        log "cleaning up slot $n left by a killed run"
        teardown "$n" "$(cat "$(slot_record "$n")" 2>/dev/null)"
      fi
    fi
    exec {fd}>&-
  done
}

# openssl helpers: one CA for serving and client certificates.
cert() {
  local pki="$1" name="$2" subject="$3" sans="$4" usage="$5"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key" 2>/dev/null
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } > "$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

kubeconfig() {
  local file="$1" server="$2" pki="$3" user="$4"
  cat > "$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: testbed-node
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: testbed-node
  context: {cluster: testbed-node, user: $user, namespace: default}
current-context: testbed-node
KUBECONFIG
}

# Starts "$@" in the background with its output in logs/NAME.log; records
# its pid. `netns` runs it in the node's network namespace.
start() {
  local name="$1" where="$2"; shift 2
  # Without the slot's lock: only this script holds it, so that a slot
  # whose script is gone is seen as free (and cleaned up) even while
  # something it started still runs.
  if [[ "$where" == netns ]]; then
    nsenter --net="/run/netns/$netns" -- "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null {slot_fd}>&- &
  else
    "$@" > "$dir/logs/$name.log" 2>&1 < /dev/null {slot_fd}>&- &
  fi
  started_pids[$name]=$!
  echo $! > "$dir/pids/$name"
}

# Waits up to $2 seconds for command "${@:3}" to succeed; on failure shows
# the end of log $1.
wait_for() {
  local name="$1" seconds="$2" i; shift 2
  for (( i = 0; i < seconds * 5; i++ )); do
    "$@" >/dev/null 2>&1 && return 0
    if [[ -f "$dir/pids/$name" ]] && ! kill -0 "$(cat "$dir/pids/$name")" 2>/dev/null; then
      tail -n 30 "$dir/logs/$name.log" >&2 || true
      die "$name exited"
    fi
    sleep 0.2
  done
  tail -n 30 "$dir/logs/$name.log" >&2 || true
  die "$name not ready after ${seconds}s"
}

up() {
  [[ $(id -u) == 0 ]] || die "up needs root (network namespaces, cgroups, mounts)"
  for c in etcd kube-apiserver "${k8s_commands[@]}" kube-router cni/bridge; do
    [[ -x "$bin/$c" ]] || die "$bin/$c is missing: run scripts/testbed.sh"
  done
  dir="${1:-}"
  if [[ -z "$dir" ]]; then dir="$(mktemp -d /tmp/devenv-testbed-node-XXXXXX)"; fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local started n fd
  started=$(date +%s)
  mkdir -p "$lockdir"
  cleanup_stale
  slot=""
  for (( n = 0; n < slots; n++ )); do
    exec {slot_fd}>"$(slot_lock "$n")"
    if flock -n "$slot_fd"; then slot="$n"; break; fi
    exec {slot_fd}>&-
  done
  [[ -n "$slot" ]] || die "all $slots node slots of this machine are in use"
  echo "$dir" > "$(slot_record "$slot")"
  keep=""
  [[ -n "${DEVENV_TESTBED_KEEP:-}" && "${DEVENV_TESTBED_KEEP}" != 0 ]] && keep=1
  trap 'teardown "$slot" "$dir" "$keep"' EXIT
  trap 'exit 130' INT TERM HUP

  netns="dvn-$slot"
  host_ip="10.201.$slot.1"; node_ip="10.201.$slot.2"; pod_cidr="10.202.$slot.0/24"
  node="testbed-node-$slot"
  cgroup_root="/devenv-testbed-$slot"
  mkdir -p "$dir/logs" "$dir/pids" "$dir/pki" "$dir/cni/net.d" "$dir/runc" "$dir/images"
  log "slot $slot, directory $dir"

  # The node's network: a namespace with a veth to the host. It has routes to
  # the host side of the link and its own pods only: nothing from a pod can
  # leave this machine.
  ip netns add "$netns"
  ip link add "dvn-$slot" type veth peer name eth0 netns "$netns"
  ip addr add "$host_ip/30" dev "dvn-$slot"
  ip link set "dvn-$slot" up
  ip -n "$netns" addr add "$node_ip/30" dev eth0
  ip -n "$netns" link set eth0 up
  ip -n "$netns" link set lo up
  ip route add "$pod_cidr" via "$node_ip" dev "dvn-$slot"
  ip netns exec "$netns" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$netns" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

  # Certificates and kubeconfigs.
  local pki="$dir/pki" server="https://$host_ip:6443"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=testbed-node CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$pki/ca.crt" 2>/dev/null
  cert "$pki" apiserver "/CN=kube-apiserver" \
    "IP:$host_ip,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth
  cert "$pki" admin "/O=system:masters/CN=admin" "" clientAuth
  cert "$pki" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "" clientAuth
  cert "$pki" kubelet "/O=system:nodes/CN=system:node:$node" "" clientAuth
  cert "$pki" controller-manager "/CN=system:kube-controller-manager" "" clientAuth
  cert "$pki" scheduler "/CN=system:kube-scheduler" "" clientAuth
  cert "$pki" kube-proxy "/CN=system:kube-proxy" "" clientAuth
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  kubeconfig "$dir/admin.kubeconfig" "$server" "$pki" admin
  local user
  for user in kubelet controller-manager scheduler kube-proxy; do
    kubeconfig "$dir/$user.kubeconfig" "$server" "$pki" "$user"
  done
  printf '{"apiVersion":"audit.k8s.io/v1","kind":"Policy","omitStages":["RequestReceived"],"rules":[{"level":"Metadata","verbs":["create","update","patch","delete","deletecollection"]},{"level":"None"}]}' \
    > "$dir/audit-policy.json"

  # Control plane, on the host side of the link.
  start etcd host "$bin/etcd" --name=testbed-node --data-dir="$dir/etcd" \
    --listen-client-urls="http://$host_ip:2379" --advertise-client-urls="http://$host_ip:2379" \
    --listen-peer-urls="http://$host_ip:2380" --initial-advertise-peer-urls="http://$host_ip:2380" \
    --initial-cluster="testbed-node=http://$host_ip:2380" --unsafe-no-fsync=true --log-level=warn
  start kube-apiserver host "$bin/kube-apiserver" \
    --etcd-servers="http://$host_ip:2379" --bind-address="$host_ip" --advertise-address="$host_ip" \
    --secure-port=6443 --cert-dir="$pki" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer="$sa_issuer" --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" --api-audiences="$sa_issuer" \
    --service-cluster-ip-range="$service_cidr" --allow-privileged=true \
    --enable-aggregator-routing=true --kubelet-preferred-address-types=InternalIP \
    --audit-policy-file="$dir/audit-policy.json" --audit-log-path="$dir/audit.log" \
    --audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0 --profiling=false
  wait_for kube-apiserver 90 curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" \
    --key "$pki/admin.key" "$server/readyz"
  log "kube-apiserver ready at $server after $(( $(date +%s) - started ))s"
  start kube-controller-manager host "$bin/kube-controller-manager" \
    --kubeconfig="$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$dir/controller-manager.kubeconfig" \
    --bind-address="$host_ip" --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr="$pod_cidr" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$service_cidr" --profiling=false
  start kube-scheduler host "$bin/kube-scheduler" \
    --kubeconfig="$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig="$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig="$dir/scheduler.kubeconfig" \
    --bind-address="$host_ip" --leader-elect=false --profiling=false

  # The node: containerd, kubelet, kube-proxy, kube-router in its namespace.
  local c
  for c in pids cpuset cpuacct cpu memory systemd blkio devices freezer; do
    mkdir -p "/sys/fs/cgroup/$c$cgroup_root"
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset$cgroup_root/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset$cgroup_root/cpuset.mems"
  cat > "$dir/containerd.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox_image"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
  # ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$bin/cni"
    conf_dir = "$dir/cni/net.d"
TOML
  start containerd netns containerd --config "$dir/containerd.toml"
  wait_for containerd 30 ctr --address "$dir/containerd.sock" version
  local tarball
  for tarball in "$images"/*.tar "$dir"/images/*.tar; do
    [[ -f "$tarball" ]] || continue
    ctr --address "$dir/containerd.sock" -n k8s.io images import --no-unpack=false "$tarball" >/dev/null \
      || die "importing $tarball failed"
  done
  cat > "$dir/cni/net.d/10-testbed.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "testbed", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
CNI
  echo "nameserver 127.0.0.1" > "$dir/resolv.conf"
  cat > "$dir/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
containerRuntimeEndpoint: unix://$dir/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
# cgroup v1 (hybrid) without systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
failSwapOn: false
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: $dir/resolv.conf
clusterDomain: cluster.local
podLogsDir: $dir/pod-logs
serializeImagePulls: false
readOnlyPort: 0
KUBELET
  start kubelet netns "$bin/kubelet" --config="$dir/kubelet.yaml" \
    --kubeconfig="$dir/kubelet.kubeconfig" --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
    --node-ip="$node_ip" --hostname-override="$node" --v=1
  cat > "$dir/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $pod_cidr
hostnameOverride: $node
bindAddress: $node_ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0}
PROXY
  start kube-proxy netns "$bin/kube-proxy" --config="$dir/kube-proxy.yaml"
  # kube-router looks its node up once, at start.
  wait_for kubelet 60 "$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" get node "$node"
  # NetworkPolicy only: routing is the bridge's, services are kube-proxy's.
  start kube-router netns env NODE_NAME="$node" "$bin/kube-router" --kubeconfig="$dir/admin.kubeconfig" \
    --hostname-override="$node" --run-firewall=true --run-router=false \
    --run-service-proxy=false --enable-cni=false --metrics-port=0 --v=1
  wait_for kubelet 120 node_ready
  wait_for kube-router 60 nsenter --net="/run/netns/$netns" -- curl -fsS http://127.0.0.1:20244/healthz
  wait_for kube-proxy 60 nsenter --net="/run/netns/$netns" -- curl -fsS http://127.0.0.1:10256/healthz
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router; do
    kill -0 "$(cat "$dir/pids/$name")" 2>/dev/null || { tail -n 30 "$dir/logs/$name.log" >&2; die "$name exited"; }
  done
  log "node $node ready after $(( $(date +%s) - started ))s"
  {
    echo "slot=$slot"; echo "node=$node"; echo "node_ip=$node_ip"; echo "host_ip=$host_ip"
    echo "pod_cidr=$pod_cidr"; echo "service_cidr=$service_cidr"; echo "server=$server"
  } > "$dir/node.env"
  cp "$dir/node.env" "$dir/ready"
  echo "testbed-node: ready: export KUBECONFIG=$dir/admin.kubeconfig" >&2

  # Until standard input closes (the test process exited) or a signal.
  while read -r _; do :; done
  if [[ "${DEVENV_TESTBED_KEEP:-}" == running ]]; then
    log "keeping the cluster running: KUBECONFIG=$dir/admin.kubeconfig; kill $$ to stop it"
    while :; do sleep 3600 & wait $!; done
  fi
}

node_ready() {
  [[ "$("$bin/kubectl" --kubeconfig "$dir/admin.kubeconfig" get node "$node" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# ---------------------------------------------------------------- dispatch

case "${1:-}" in
  build) build "${2:-}" ;;
  image) shift; image "$@" ;;
  up) shift; up "$@" ;;
  cleanup) cleanup_stale ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2; exit 2 ;;
esac
