//go:build tools

// Package tools pins kube-router, whose network policy controller enforces NetworkPolicies on the
// local cluster's real node (iptables and ipset; run with only the firewall enabled).
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
