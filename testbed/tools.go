//go:build tools

// Package testbed only pins the commands that scripts/testbed.sh builds.
package testbed

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
