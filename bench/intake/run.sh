#!/usr/bin/env bash
# /anomaly throughput and latency: healer's intake against the seed's
# FastAPI service, same machine, same wrk load. Needs wrk (apt-get install
# -y wrk) and Python 3 with venv; installs fastapi, uvicorn, pyyaml into
# target/bench-intake/venv. Prints wrk's summaries; record them in
# docs/PERFORMANCE.md. HEALER_BIN_DIR=DIR takes healer and its plugins from
# DIR instead of building (cargo build --release, target/release).
# distinct.sh is the same load with a distinct anomaly name per request.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
need wrk wrk
root=$(cd "$here/../.." && pwd)
work="$root/target/bench-intake"
mkdir -p "$work"
rm -rf "$work/state"   # a fresh store each run
duration=${DURATION:-10s}
connections=${CONNECTIONS:-50}

if [ ! -x "$work/venv/bin/uvicorn" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q fastapi uvicorn pyyaml
fi
if [ -n "${HEALER_BIN_DIR:-}" ]; then
    bin=$(cd "$HEALER_BIN_DIR" && pwd)
else
    (cd "$root" && cargo build --release -q)
    bin="$root/target/release"
fi
mkdir -p "$work/plugins"
install -m 0644 "$bin"/libhealer_plugin_*.so "$work/plugins/"
chmod 0755 "$work/plugins"

cleanup() { kill "${seed:-}" "${healer:-}" 2>/dev/null || true; }
trap cleanup EXIT
(cd "$here" && exec "$work/venv/bin/uvicorn" seed_autohealer:app --port 8001 --log-level warning) > "$work/seed.log" 2>&1 &
seed=$!
(cd "$here" && exec "$bin/healer" --config healer.toml --plugins-dir "$work/plugins" run) 2> "$work/healer.stderr" &
healer=$!
for port in 8001 8002; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

load() { # label port anomaly
    echo "== $1"
    ANOMALY=$3 wrk -t2 -c"$connections" -d"$duration" --latency -s "$here/post.lua" "http://127.0.0.1:$2/anomaly" \
        | grep -E "Requests/sec|Latency |  50%|  99%|requests in|Non-2xx"
}
load "seed FastAPI, matched anomaly (logs every action)" 8001 api_latency.coinbase.high
load "healer, matched anomaly (one run, then counted as suppressed)" 8002 api_latency.coinbase.high
load "healer, unknown anomaly (no_reflex, recorded once per 10 s)" 8002 nobody.knows.this
echo "healer RSS after the load: $(ps -o rss= -p "$healer") KiB; seed RSS: $(ps -o rss= -p "$seed") KiB"
