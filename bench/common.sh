# What bench/run.sh and bench/instructions.sh both start with; sourced, never run. The sourcing script
# sets `say_as` (the prefix of its progress lines) first. Leaves the shell in the repository root with:
#   cache   the tools cache shared with the tests (TOLLGATE_CACHE, by default ~/.cache/tollgate)
#   target  cargo's target directory (CARGO_TARGET_DIR, by default target)
#   say     progress on stderr;  as_root  a command as root (sudo unless already root)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cache="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
target="${CARGO_TARGET_DIR:-target}"
say() { printf '%s: %s\n' "$say_as" "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
