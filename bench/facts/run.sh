#!/usr/bin/env bash
# Facts: what publishing facts costs healer (issue 22). N targets (default
# 1,000) checked every INTERVAL by the `flood` monitor of the
# healer-fixture-facts-flood package (tests/fixtures/facts-flood: no I/O,
# every check OK, so what differs between modes is the facts alone), in
# its worker (the default), three ways in one run, interleaved ROUNDS
# times so the machine's noise falls on every mode alike:
#   none       no facts;
#   unchanged  5 facts per check, the same values every check;
#   changing   5 facts per check, one of them new every check (a
#              fact_changed event, and a store write, per check).
# For each run: CPU (% of one core: utime + stime of healer and its plugin
# worker, and of healer alone) over MEASURE seconds after WARMUP, RSS (the same, summed) at the
# end, checks per second (healer's own /metrics, so every mode is seen to
# do the same checks) and CPU per check. Prints every run, then each
# mode's median, spread and ratio to `none`.
#
# Needs: a release build (made here), curl, bc. Loopback only; every run
# is bounded (WARMUP + MEASURE seconds).
# Usage: bench/facts/run.sh      N=1000 INTERVAL=1s ROUNDS=2 WARMUP=15 MEASURE=60
#        MODES="none unchanged changing" PERF=1 (perf record -g of healer
#        in each run's window, into $work/perf-<mode>-<round>.data)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
work="$target_dir/bench-facts"
n=${N:-1000}
interval=${INTERVAL:-1s}
rounds=${ROUNDS:-2}
warmup=${WARMUP:-15}
measure=${MEASURE:-60}
modes=${MODES:-none unchanged changing}
port=${PORT:-18490}
. "$here/../lib.sh"
need curl curl
need bc bc

(cd "$root" && cargo build --release -q -p healer -p healer-fixture-facts-flood)
bin="$target_dir/release"
rm -rf "$work"; mkdir -p "$work/plugins"
install -m 0644 "$bin/libhealer_fixture_facts_flood.so" "$work/plugins/"
chmod 0755 "$work/plugins"
cleanup() { [ -n "${tool_pid:-}" ] && kill -TERM -- "-$tool_pid" 2>/dev/null || true; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

# config MODE: the config of one mode, written once.
config() {
    local mode=$1 monitor
    case $mode in
        none) monitor='count = 0' ;;
        unchanged) monitor='count = 5' ;;
        changing) monitor='count = 5, changing = true' ;;
        *) echo "bench: no mode $mode (none, unchanged, changing)" >&2; exit 2 ;;
    esac
    {
        printf '[healer]\ninterval = "%s"\nplugins_dir = "%s/plugins"\nstate_dir = "%s/state-%s"\nlog_file = "%s/healer-%s.log"\nlog_level = "warn"\n' \
            "$interval" "$work" "$work" "$mode" "$work" "$mode"
        printf '[intake]\nbind = "127.0.0.1:%s"\n' "$port"
        for i in $(seq 1 "$n"); do
            printf '[[target]]\nname = "t%d"\nmonitor = { plugin = "flood", %s }\n' "$i" "$monitor"
        done
    } > "$work/healer-$mode.toml"
    "$bin/healer" check --config "$work/healer-$mode.toml" > /dev/null
}

# checks: every check healer has timed, from its /metrics.
checks() {
    curl -fsS "http://127.0.0.1:$port/metrics" |
        awk '/^healer_check_duration_seconds_count/ {sum += $NF} END {print sum + 0}'
}

# own_cpu PID: CPU ticks (utime + stime) of that process alone.
own_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run MODE ROUND: prints "mode round cpu% rss_mb checks_per_s healer_cpu%".
run() {
    local mode=$1 round=$2
    rm -rf "$work/state-$mode"
    setsid "$bin/healer" run --config "$work/healer-$mode.toml" > "$work/$mode-$round.out" 2>&1 &
    tool_pid=$!
    for _ in $(seq 600); do
        curl -fsS "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
        sleep 0.05
    done
    sleep "$warmup"
    local perf_pid=""
    if [ -n "${PERF:-}" ]; then
        perf record -q -g -o "$work/perf-$mode-$round.data" -p "$tool_pid" -- sleep "$measure" > /dev/null 2>&1 &
        perf_pid=$!
    fi
    local c0 h0 k0 t0 c1 h1 k1 t1 rss
    c0=$(cpu_of "$tool_pid"); h0=$(own_cpu "$tool_pid"); k0=$(checks); t0=$(date +%s.%N)
    sleep "$measure"
    c1=$(cpu_of "$tool_pid"); h1=$(own_cpu "$tool_pid"); k1=$(checks); t1=$(date +%s.%N)
    rss=$(rss_of "$tool_pid")
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    kill -TERM -- "-$tool_pid" 2>/dev/null || kill "$tool_pid" 2>/dev/null || true
    wait "$tool_pid" 2>/dev/null || true
    tool_pid=""
    local secs; secs=$(echo "$t1 - $t0" | bc -l)
    printf '%s %s %.2f %.1f %.1f %.2f\n' "$mode" "$round" \
        "$(echo "100 * ($c1 - $c0) / $ticks / $secs" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" \
        "$(echo "($k1 - $k0) / $secs" | bc -l)" \
        "$(echo "100 * ($h1 - $h0) / $ticks / $secs" | bc -l)"
}

for mode in $modes; do config "$mode"; done
results=()
for round in $(seq 1 "$rounds"); do
    for mode in $modes; do
        line=$(run "$mode" "$round")
        echo "$line" >&2
        results+=("$line")
    done
done

echo
echo "facts: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), N=$n, interval $interval, warm-up ${warmup}s, measured ${measure}s, $rounds rounds"
printf '%-10s %5s %8s %13s %8s %9s %13s\n' mode round "CPU %" "healer CPU %" "RSS MB" "checks/s" "µs CPU/check"
for line in "${results[@]}"; do
    read -r mode round cpu rss rate own <<< "$line"
    printf '%-10s %5s %8s %13s %8s %9s %13.1f\n' "$mode" "$round" "$cpu" "$own" "$rss" "$rate" \
        "$(echo "10000 * $cpu / ($rate + 0.0001)" | bc -l)"
done
echo
# Each mode: the median of its runs (the mean of the middle two for an
# even count), the spread (min–max), and the ratio of medians to `none`.
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
base=""
for mode in $modes; do
    cpus=$(for line in "${results[@]}"; do read -r m _ cpu _ <<< "$line"; if [ "$m" = "$mode" ]; then echo "$cpu"; fi; done)
    mid=$(median <<< "$cpus")
    lo=$(sort -g <<< "$cpus" | head -1); hi=$(sort -g <<< "$cpus" | tail -1)
    [ -n "$base" ] || base=$mid
    printf '%-10s CPU median %6.2f %%  (%s–%s)  ratio to %s %.3f\n' "$mode" "$mid" "$lo" "$hi" \
        "${modes%% *}" "$(echo "$mid / ($base + 0.0001)" | bc -l)"
done
