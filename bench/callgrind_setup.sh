# What bench/instructions.sh and bench/rest.sh share; sourced after common.sh, never run. Given
# `upstream_port`, installs valgrind if missing, builds the release binaries, and leaves:
#   work          a temporary directory, removed on exit with every process listed in `pids`
#   key, prefix   the benchmark consumer's key and route prefix (tollgate-bench snapshot --small)
#   chat.json     in $work: the ~1 KB chat body both scripts send
# with bench-upstream listening on `upstream_port` and `wait_port` defined.
command -v valgrind >/dev/null || {
    say "installing Debian's valgrind"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind
}
cargo build --release -p tollgate-bench -p tollgate-proxy >&2

work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$target/release/tollgate-bench" snapshot --small --upstream "127.0.0.1:$upstream_port" \
    >"$work/snapshot.yaml" 2>"$work/identity"
key="$(sed -n 's/.*key \([^ ]*\).*/\1/p' "$work/identity")"
prefix="$(sed -n 's/.*prefix \([^,]*\),.*/\1/p' "$work/identity")"
[ -n "$key" ] && [ -n "$prefix" ] || { say "could not read the benchmark identity"; exit 1; }
"$target/release/bench-upstream" --listen "127.0.0.1:$upstream_port" >/dev/null 2>&1 &
pids+=($!)

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
prose = ("lorem ipsum dolor sit amet " * 40)[:820]
chat = {"model": "bench-chat", "messages": [
    {"role": "system", "content": "You are a concise assistant for an internal platform team."},
    {"role": "user", "content": prose}], "temperature": 0.2, "max_tokens": 256}
open(f"{work}/chat.json", "w").write(json.dumps(chat))
open(f"{work}/embeddings.json", "w").write(json.dumps({"model": "bench-embed", "input": prose[:200]}))
open(f"{work}/prompt.json", "w").write(json.dumps({"variables": {"text": prose}}))
PY

wait_port() {
    for _ in $(seq 300); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
