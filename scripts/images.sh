#!/usr/bin/env bash
# Builds the tollgate-proxy and tollgate-controller images from proxy/Dockerfile and controller/Dockerfile with
# buildah (no daemon, no registry), and writes each as a docker-archive that `ctr images import`, `podman load`,
# `docker load` or `skopeo copy` take. Run from anywhere: bash scripts/images.sh
#
# Nothing is pulled from a container registry. The Dockerfiles start FROM scratch and copy in a build context
# that this script assembles:
#   rootfs/   the runtime files of the Debian 12 packages libc6, libgcc-s1 and ca-certificates (fetched with
#             `apt-get download`, unpacked with `dpkg-deb -x`), the CA bundle made from ca-certificates' PEMs
#             as update-ca-certificates would, and /etc/passwd and /etc/group naming the user nonroot (65532);
#   <binary>  the release binary, built here on the host by cargo (the host is Debian 12: same glibc),
#             without its debug sections.
#
# Each image is cached by the hash of its inputs (its Dockerfile, the binary, the package versions, this script)
# in ${TOLLGATE_CACHE:-~/.cache/tollgate}/images; an unchanged input set is not rebuilt.
# Prints one line per image on stdout: <name> <reference> <archive path> <image bytes>; progress on stderr.
# TOLLGATE_IMAGE_PROFILE picks the cargo profile (default release).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
out="$cache/images"
store="$cache/buildah"
profile="${TOLLGATE_IMAGE_PROFILE:-release}"
packages=(libc6 libgcc-s1 ca-certificates)

log() { echo "[images] $*" >&2; }

if ! command -v buildah >/dev/null || ! command -v apt-get >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    log "needs buildah, and apt-get to fetch the runtime packages (a Debian 12 host)"
    exit 1
  fi
  log "installing buildah"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >&2
fi

# buildah keeps its own store under the cache (vfs: works without overlay mounts or fuse), so nothing here
# touches the machine's containers/storage.
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

mkdir -p "$out" "$store"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt-get download fetches as the user _apt

# The runtime file system: the exact package versions apt would install make part of the cache key.
versions="$(dpkg-query -W -f '${Package}=${Version}\n' "${packages[@]}" 2>/dev/null || true)"
rootfs_key="$(printf '%s\n' "$versions" | cat - "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
rootfs="$out/rootfs-$rootfs_key"
if [[ ! -d "$rootfs" ]]; then
  log "assembling the runtime root file system from ${packages[*]}"
  (cd "$work" && apt-get download $(printf '%s\n' "$versions") >&2)
  mkdir -p "$work/rootfs"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/rootfs"; done
  r="$work/rootfs"
  # update-ca-certificates' output (it runs in the package's postinst, which dpkg-deb -x does not run).
  mkdir -p "$r/etc/ssl/certs"
  find "$r/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$r/etc/ssl/certs/ca-certificates.crt"
  # Not for the binaries: documentation, locales' messages, iconv's charset modules (Rust never loads
  # them), the certificates' separate copies and the tools and settings that maintain them.
  rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/lintian" "$r/usr/share/locale" \
    "$r/usr/lib/x86_64-linux-gnu/gconv" "$r/usr/share/ca-certificates" "$r/usr/sbin" \
    "$r/etc/ca-certificates" "$r/etc/ca-certificates.conf"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$r/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$r/etc/group"
  mkdir -p "$r/tmp"
  chmod 1777 "$r/tmp"
  rm -rf "$out"/rootfs-*
  mv "$r" "$rootfs.tmp"
  mv "$rootfs.tmp" "$rootfs"
fi

log "building the binaries (cargo --profile $profile)"
(cd "$repo" && cargo build --profile "$profile" --locked -p tollgate-proxy -p tollgate-controller --bins >&2)
target="${CARGO_TARGET_DIR:-$repo/target}"
[[ "$target" = /* ]] || target="$repo/$target"
bindir="$target/$([[ "$profile" == dev ]] && echo debug || echo "$profile")"

for name in proxy controller; do
  binary="tollgate-$name"
  dockerfile="$repo/$name/Dockerfile"
  key="$(cat "$dockerfile" "$bindir/$binary" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)-$rootfs_key"
  tag="${key:0:16}"
  reference="localhost/$binary:$tag"
  archive="$out/$binary-$key.tar"
  if [[ ! -f "$archive" ]]; then
    log "building $reference from $name/Dockerfile"
    started=$SECONDS
    context="$work/$name"
    mkdir -p "$context"
    cp -a "$rootfs" "$context/rootfs"
    cp "$bindir/$binary" "$context/$binary"
    # The release profile keeps line tables for the host's debuggers; the image keeps only the symbols
    # (backtraces still name functions): 140 MB down to about 20.
    strip --strip-debug "$context/$binary"
    bah build --quiet --layers=false -f "$dockerfile" -t "$reference" "$context" >&2
    rm -f "$archive.tmp"
    bah push --quiet "$reference" "docker-archive:$archive.tmp:$reference" >&2
    # One archive per image in the cache: the previous inputs' goes.
    find "$out" -maxdepth 1 -name "$binary-*.tar" ! -name "$(basename "$archive").tmp" -delete
    mv "$archive.tmp" "$archive"
    bah rmi "$reference" >/dev/null 2>&1 || true
    rm -rf "$context"
    log "built $reference in $((SECONDS - started))s"
  fi
  # The image's size is its one layer, uncompressed: the archive holds it as a plain tar.
  bytes="$(tar -tvf "$archive" | awk '$6 ~ /\.tar$|layer/ {s += $3} END {print s + 0}')"
  echo "$name $reference $archive $bytes"
done
