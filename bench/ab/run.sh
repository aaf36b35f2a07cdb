#!/usr/bin/env bash
# A/B: two builds of healer, alternated, at N HTTP targets checked every
# second against one local nginx (the config of bench/scale), so that the
# noise of this shared machine falls on both alike. Each build is a
# directory holding `healer` and `plugins/libhealer_plugin_http.so`
# (copy them out of target/release after each build). For each round and
# build: CPU of one core (healer and its workers), RSS, and the CPU ticks
# of the worker's package thread (`healer-plugin`) and of its other
# threads; then the mean, min and max of each build.
#
# Needs: nginx (installed with apt-get when missing). Loopback only;
# every run is bounded (WARMUP + MEASURE seconds).
# Usage: bench/ab/run.sh BEFORE_DIR AFTER_DIR
#        N=1000 ROUNDS=5 WARMUP=10 MEASURE=20 PORT=18680
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ $# -eq 2 ] || { echo "usage: bench/ab/run.sh BEFORE_DIR AFTER_DIR" >&2; exit 2; }
builds=("$1" "$2")
for d in "${builds[@]}"; do
    [ -x "$d/healer" ] && [ -f "$d/plugins/libhealer_plugin_http.so" ] || {
        echo "bench/ab: $d needs healer and plugins/libhealer_plugin_http.so" >&2; exit 2; }
done
n=${N:-1000}; rounds=${ROUNDS:-5}; warmup=${WARMUP:-10}; measure=${MEASURE:-20}
port=${PORT:-18680}; api_port=$((port + 1))
work="$root/target/bench-ab"
. "$here/../lib.sh"
need nginx nginx
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
rm -rf "$work"
nginx_conf "$work/nginx" "$port"
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf"
pid=""
cleanup() {
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null || true
    "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)
: > "$work/results"
for r in $(seq "$rounds"); do
    for b in 0 1; do
        d=$(cd "${builds[$b]}" && pwd); run="$work/build$b"; rm -rf "$run"; mkdir -p "$run"
        {
            printf '[healer]\ninterval = "1s"\ntimeout = "5s"\nplugins_dir = "%s/plugins"\nstate_dir = "%s/state"\nlog_file = "%s/healer.log"\nlog_level = "info"\n' "$d" "$run" "$run"
            printf '[intake]\nbind = "127.0.0.1:%s"\n' "$api_port"
            for i in $(seq 1 "$n"); do
                printf '[[target]]\nname = "t%d"\nmonitor = { plugin = "http", url = "http://127.0.0.1:%d/t%d", timeout = "4s" }\n[[target.diagnose]]\nplugin = "http"\n' "$i" "$port" "$i"
            done
        } > "$run/healer.toml"
        setsid "$d/healer" run --config "$run/healer.toml" > "$run/out" 2>&1 &
        pid=$!
        sleep "$warmup"
        c0=$(cpu_of "$pid"); t0=$(date +%s.%N); sleep "$measure"; c1=$(cpu_of "$pid"); t1=$(date +%s.%N)
        rss=$(rss_of "$pid")
        package=0; other=0
        for w in $(ps -o pid= --ppid "$pid"); do
            for t in /proc/"$w"/task/*; do
                v=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)
                if [ "$(cat "$t/comm" 2>/dev/null)" = healer-plugin ]; then package=$((package + v)); else other=$((other + v)); fi
            done
        done
        kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
        cpu=$(echo "100 * ($c1 - $c0) / $ticks / ($t1 - $t0)" | bc -l)
        printf '%s %s %.2f %d %d %d\n' "$b" "$r" "$cpu" $((rss / 1024)) "$package" "$other" | tee -a "$work/results" >&2
    done
done
echo "ab: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, N=$n, $rounds rounds, warm-up ${warmup}s, measured ${measure}s"
printf '%-40s %10s %8s %8s %8s %14s %14s\n' build "CPU % mean" min max "RSS MB" "package ticks" "worker ticks"
for b in 0 1; do
    awk -v b="$b" -v name="${builds[$b]}" '$1 == b { s += $3; if (min == "" || $3 < min) min = $3; if ($3 > max) max = $3; rss += $4; p += $5; o += $6; k++ }
        END { printf "%-40s %10.2f %8.2f %8.2f %8.0f %14.0f %14.0f\n", name, s / k, min, max, rss / k, p / k, o / k }' "$work/results"
done
