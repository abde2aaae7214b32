# What the bench scripts start with; sourced, never run. The sourcing script
# sets `say_as` (the prefix of its progress lines) first. Leaves the shell in the repository root with:
#   cache   the tools cache shared with the tests (TOLLGATE_CACHE, by default ~/.cache/tollgate)
#   target  cargo's target directory (CARGO_TARGET_DIR, by default target)
#   say     progress on stderr;  as_root  a command as root (sudo unless already root);
#   ensure_valgrind  installs valgrind if missing
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
target="${CARGO_TARGET_DIR:-target}"
say() { printf '%s: %s\n' "$say_as" "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Installs Debian's valgrind unless it is there (the callgrind-counting scripts need it).
ensure_valgrind() {
    command -v valgrind >/dev/null && return 0
    say "installing Debian's valgrind"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind
}
