# What bench/instructions.sh and bench/rest.sh share; sourced after common.sh, never run. Given
# `upstream_port`, installs valgrind if missing, builds the release binaries, and leaves:
#   work          a temporary directory, removed on exit with every process listed in `pids`
#   key, prefix   the benchmark consumer's key and route prefix (tollgate-bench snapshot --small)
#   chat.json     in $work: the ~1 KB chat body both scripts send
# with bench-upstream listening on `upstream_port` and `wait_port` defined.
ensure_valgrind
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

# Helpers for the scripts written since (bench/cache.sh); the older scripts keep their own copies.

# `n` POSTs of `body` to `url` over one connection, with the benchmark key and any further curl
# arguments (`-H "cache-control: no-cache"`); prints how many answered 200.
post_many() {
    local url="$1" n="$2" body="$3" config
    shift 3
    config="$(mktemp "$work/curl.XXXXXX")"
    for _ in $(seq "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url" >>"$config"; done
    curl -s -K "$config" -H "authorization: Bearer $key" -H "content-type: application/json" "$@" \
        --data-binary "@$body" -w '%{http_code}\n' | grep -c '^200$' || true
    rm -f "$config"
}

# One POST to `url` of each file named in `list` (one path a line), over one connection, with the
# benchmark key; prints how many answered 200.
post_each() {
    local url="$1" list="$2" config path first=1
    config="$(mktemp "$work/curl.XXXXXX")"
    while read -r path; do
        [ "$first" = 1 ] || echo next >>"$config"
        first=0
        printf 'url = "%s"\noutput = "/dev/null"\ndata-binary = "@%s"\nwrite-out = "%%{http_code}\\n"\n' \
            "$url" "$path" >>"$config"
        printf 'header = "authorization: Bearer %s"\nheader = "content-type: application/json"\n' \
            "$key" >>"$config"
    done <"$list"
    curl -s -K "$config" | grep -c '^200$' || true
    rm -f "$config"
}

# Starts the release proxy (or the binary in `proxy_bin`) on `snapshot.yaml` under callgrind, its
# profile in `$work/callgrind.out.<n>` (one file per `callgrind_dump`); sets `vg` to its pid.
callgrind_proxy() {
    rm -f "$work/callgrind.out"*
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "${proxy_bin:-$target/release/tollgate-proxy}" standalone "$work/snapshot.yaml" \
        --poll-interval 1h --listen "127.0.0.1:$proxy_port" --admin-listen "127.0.0.1:$admin_port" \
        "$@" >/dev/null 2>&1 &
    vg=$!
    pids+=("$vg")
    wait_port "$proxy_port" || { say "the proxy did not start under callgrind"; return 1; }
}

# Writes the instructions counted since the last dump (or `callgrind_control -z`) as a profile of
# their own and prints their total.
callgrind_dump() {
    local before after file
    before="$(find "$work" -name "callgrind.out.*" | wc -l)"
    callgrind_control -d "$vg" >/dev/null 2>&1
    for _ in $(seq 100); do
        after="$(find "$work" -name "callgrind.out.*" | wc -l)"
        [ "$after" -gt "$before" ] && break
        sleep 0.1
    done
    sleep 0.5
    file="$work/callgrind.out.$after"
    [ -s "$file" ] || { say "callgrind wrote no profile"; return 1; }
    callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}
