#!/usr/bin/env bash
# Provides what the one-node test cluster needs beyond the control plane (tests/controlplane/ensure.sh),
# building or installing each piece only when it is absent:
#   kubelet, kube-controller-manager, kube-scheduler, kube-proxy
#                          built from k8s.io/kubernetes, the same version as kube-apiserver (wrapper in kube/)
#   coredns                CoreDNS with the plugins the cluster's DNS uses, built from coredns/ (its own main.go)
#   metrics-server         sigs.k8s.io/metrics-server (wrapper in metrics-server/): the resource metrics API the
#                          HorizontalPodAutoscaler reads, run on the host behind an APIService
#   pause                  the pod sandbox's process, built from pause/ (a static Go binary), and the image
#                          localhost/pause:<stamp> holding only it, as a docker-archive (images/pause-<stamp>.tar)
#   containerd, runc, CNI plugins (bridge, host-local, loopback, portmap), buildah, iptables, conntrack
#                          Debian packages, installed with apt-get when a command is missing
# Binaries land in ${TOLLGATE_CACHE:-~/.cache/tollgate}/bin, outside the repository.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
bin="$cache/bin"
mkdir -p "$bin"

log() { echo "[cluster] $*" >&2; }

# The control plane's script owns the Kubernetes version and the ldflags; reuse them.
KUBE_VERSION="$(sed -n 's/^KUBE_VERSION="\(.*\)"$/\1/p' "$here/../controlplane/ensure.sh")"
[[ -n "$KUBE_VERSION" ]] || { log "no KUBE_VERSION in tests/controlplane/ensure.sh"; exit 1; }
if ! grep -q "require k8s.io/kubernetes $KUBE_VERSION\$" "$here/kube/go.mod"; then
  log "kube/go.mod does not require k8s.io/kubernetes $KUBE_VERSION like the control plane does"
  exit 1
fi

install_debian_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v buildah >/dev/null || missing+=(buildah)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v dpkg-deb >/dev/null || missing+=(dpkg)
  ((${#missing[@]} == 0)) && return
  log "installing Debian packages: ${missing[*]}"
  # The containerd package must not start a daemon of its own: the harness starts one per run.
  local made_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if [[ -n "$made_policy" ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# A Go binary's inputs: its wrapper module (go.mod, go.sum, Go files) and the flags it is linked with.
module_stamp() { # module dir, ldflags
  local dir="$1" ldflags="$2"
  { cat "$dir/go.mod" "$dir"/*.go; cat "$dir/go.sum" 2>/dev/null || true; echo "$ldflags"; } \
    | sha256sum | cut -c1-16
}

build_go() { # name, module dir, package, ldflags
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  local stamp
  stamp="$(module_stamp "$dir" "$ldflags")"
  if [[ -x "$bin/$name" && "$(cat "$bin/$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
    return
  fi
  log "building $name from $(basename "$dir")/go.mod (first run only; minutes on 2 cores)"
  local started=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 nice go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" >"$bin/$name.stamp"
  log "built $name in $((SECONDS - started))s"
}

kube_ldflags() {
  local v="$KUBE_VERSION" major minor
  major="$(echo "${v#v}" | cut -d. -f1)"
  minor="$(echo "${v#v}" | cut -d. -f2)"
  local flags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

# metrics-server reports its version from client-go's variables, as its own Makefile stamps them.
metrics_server_ldflags() {
  local v
  v="$(sed -n 's/^require sigs.k8s.io\/metrics-server \(v[^ ]*\)$/\1/p' "$here/metrics-server/go.mod")"
  local flags="-s -w"
  flags+=" -X k8s.io/client-go/pkg/version.gitVersion=$v"
  flags+=" -X k8s.io/client-go/pkg/version.gitCommit=unknown"
  flags+=" -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z"
  echo "$flags"
}

# The sandbox image every pod starts with. containerd would pull registry.k8s.io/pause; this machine
# reaches no registry, so the image is made here with buildah from the binary alone (FROM scratch).
pause_image() {
  local stamp archive store
  stamp="$(stamp_of "$bin/pause")"
  archive="$cache/images/pause-$stamp.tar"
  if [[ ! -f "$archive" ]]; then
    log "making the image localhost/pause:$stamp"
    mkdir -p "$cache/images"
    store="$cache/buildah"
    local bah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
    local ctr
    ctr="$("${bah[@]}" from scratch)"
    "${bah[@]}" copy "$ctr" "$bin/pause" /pause >/dev/null
    "${bah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    "${bah[@]}" commit --quiet "$ctr" "localhost/pause:$stamp" >/dev/null
    "${bah[@]}" rm "$ctr" >/dev/null
    "${bah[@]}" push --quiet "localhost/pause:$stamp" "docker-archive:$archive.tmp:localhost/pause:$stamp"
    "${bah[@]}" rmi "localhost/pause:$stamp" >/dev/null
    mv "$archive.tmp" "$archive"
  fi
  ln -sf "$archive" "$cache/images/pause.tar"
}

install_debian_packages
build_go pause "$here/pause" . "-s -w"
build_go coredns "$here/coredns" . "-s -w"
build_go metrics-server "$here/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server "$(metrics_server_ldflags)"
pause_image
for component in kubelet kube-controller-manager kube-scheduler kube-proxy; do
  build_go "$component" "$here/kube" "k8s.io/kubernetes/cmd/$component" "$(kube_ldflags)"
done

echo "$bin"
