#!/usr/bin/env bash
# Builds the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, and a kubectl of the same version) from source, at the versions pinned in
# kube/control-plane/go.mod and kube/etcd/go.mod, into a cache keyed by those versions:
#   ${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/smidge}/control-plane/<k8s>-<etcd>/bin/
# A binary already in the cache is not rebuilt, so a second run does nothing. Go's own module and
# build caches are reused, so a rebuild after a version change only compiles what changed.
# Prints the bin directory as its last line (for scripts: `bin=$(kube/build.sh | tail -1)`).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Static binaries, as the official releases are; niced so a build does not starve other work.
export CGO_ENABLED=0
go=(nice -n 19 go)

# The version a module pins for `dep`, read from its go.mod without running the go command.
pinned() { awk -v dep="$2" '{ sub(/^require[ \t]+/, "") } $1 == dep && $2 ~ /^v/ { print $2; exit }' "$here/$1/go.mod"; }
k8s=$(pinned control-plane k8s.io/kubernetes)
etcd=$(pinned etcd go.etcd.io/etcd/server/v3)
[[ -n $k8s && -n $etcd ]] || { echo "build.sh: no k8s.io/kubernetes or etcd server version in kube/*/go.mod" >&2; exit 1; }

bin="${SMIDGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smidge}/control-plane/$k8s-$etcd/bin"
mkdir -p "$bin"

# What `kube-apiserver --version` and the /version endpoint report (hack/lib/version.sh sets these).
minor=${k8s#v1.}; minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# build <module dir> <binary name> <main package> <ldflags>: builds into the cache unless there.
build() {
  local dir=$1 name=$2 pkg=$3 ldflags=$4
  if [[ -x $bin/$name ]]; then
    echo "$name: cached"
    return
  fi
  local start=$SECONDS
  (cd "$here/$dir" && "${go[@]}" build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$name: built in $((SECONDS - start))s ($(du -h "$bin/$name" | cut -f1))"
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build control-plane "$name" "k8s.io/kubernetes/cmd/$name" "$k8s_ldflags"
done
echo "$bin"
