//go:build tools

// Package tools records the etcd main package kube/build.sh builds, so that `go mod tidy` keeps
// its dependencies in go.mod and go.sum. It is never compiled (the build tag is never set).
package tools

import _ "go.etcd.io/etcd/server/v3"
