//go:build tools

// Package tools only pins the helm command that scripts/helm.sh builds.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
