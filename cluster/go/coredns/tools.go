//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the local cluster's real node.
package tools

import (
	_ "github.com/coredns/coredns"
)
