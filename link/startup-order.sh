#!/usr/bin/env bash
# Writes link/startup-order.txt, the list build.rs hands the linker: the
# functions `certshift proxy` (as ../shared/perf/compare.sh runs it) and
# `certshift serve` run from start-up through one proxied request, in the
# order first run, as valgrind's callgrind records them in the release build.
#
# Run it after `cargo update`, a rustc upgrade or a version bump (each
# changes the symbol names the list holds; a stale name is skipped, so the
# build still works, only the layout degrades), then `cargo build --release`.
# `--check` only counts how many names of the list the current release
# binary defines.
#
# Needs: valgrind, curl, python3.  Usage: link/startup-order.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/certshift
LIST=link/startup-order.txt

defined() { nm --defined-only "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u; }

if [ "${1:-}" = "--check" ]; then
  [ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }
  have=$(comm -12 <(defined) <(sort -u "$LIST") | wc -l)
  echo "$have of $(wc -l < "$LIST") names in $LIST are defined in $BIN"
  exit 0
fi

for tool in valgrind curl python3 nm; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
cargo build --release
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
"$BIN" pki init --out "$T/pki" >/dev/null

# Under valgrind a process starts in seconds, not milliseconds.
started() {
  for _ in $(seq 600); do
    grep -q '^listening on ' "$1" 2>/dev/null && { sed -n 's/^listening on //p' "$1" | head -1; return; }
    sleep 0.1
  done
  echo "no 'listening on' in $1" >&2; exit 1
}
cg() { exec valgrind --tool=callgrind --demangle=no --callgrind-out-file="$T/$1.cg" "$BIN" "$@"; }

cg serve --pki "$T/pki" --listen 127.0.0.1:0 >"$T/serve.out" 2>"$T/serve.err" &
serve_addr=$(started "$T/serve.out")
cg proxy --listen 127.0.0.1:0 --admin off --upstream "$serve_addr" \
  --upstream-ca "$T/pki/ca/ca.crt" --upstream-name localhost \
  --client-cert "$T/pki/clients/order-service/tls.crt" \
  --client-key "$T/pki/clients/order-service/tls.key" >"$T/proxy.out" 2>"$T/proxy.err" &
proxy_addr=$(started "$T/proxy.out")
code=$(curl -s -m 60 -o /dev/null -w '%{http_code}' "http://$proxy_addr/probe")
[ "$code" = 200 ] || { echo "the proxied request got $code" >&2; exit 1; }
sleep 2
kill -INT $(jobs -p)
wait || true

defined >"$T/defined"
python3 - "$T/defined" "$T/proxy.cg" "$T/serve.cg" >"$LIST" <<'PY'
import re, sys
# callgrind names an object or function once, "fn=(12) name", then "fn=(12)".
rx = re.compile(r'^(c?ob|c?fn)=\((\d+)\)(?: (.*))?$')
defined = set(open(sys.argv[1]).read().split())
order, seen = [], set()
for path in sys.argv[2:]:
    lines = open(path).read().splitlines()
    names = {'ob': {}, 'fn': {}}
    for l in lines:
        m = rx.match(l)
        if m and m.group(3):
            names[m.group(1)[-2:]][m.group(2)] = m.group(3)
    ob = None
    for l in lines:
        m = rx.match(l)
        if not m:
            continue
        if m.group(1) == 'ob':
            ob = names['ob'].get(m.group(2), '')
        elif m.group(1) == 'fn' and ob and ob.endswith('/certshift'):
            name = names['fn'].get(m.group(2))
            if name in defined and name not in seen:
                seen.add(name)
                order.append(name)
print('\n'.join(order))
PY
echo "$(wc -l < "$LIST") functions written to $LIST; now: cargo build --release"
