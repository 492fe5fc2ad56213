//go:build tools

// Package tools only pins the helm command (Helm 4) that scripts/helm.sh
// builds into .testbed/bin/helm4, next to Helm 3 from ../go.mod.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
