"""Reads slow_server.py's request log and prints, for the requests that
arrived in [T0, T1): their number, the rate, how many targets were seen,
and the real period of the checks: the intervals between consecutive
requests of each target (both inside the window), pooled over the
targets: median, p99, max. Prints one line of key=value.

With INTERVAL (seconds), also the share of intervals on time: at most
10 % longer than INTERVAL (a check missed entirely makes one interval of
twice the period: late).

Usage: python3 periods.py LOG T0 T1 [INTERVAL]
"""
import statistics
import sys
from collections import defaultdict

log, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else None
seen = defaultdict(list)
count = 0
with open(log) as f:
    for line in f:
        try:
            at, path = line.split()
            at = float(at)
        except ValueError:
            continue
        if t0 <= at < t1:
            seen[path].append(at)
            count += 1
intervals = []
for times in seen.values():
    times.sort()
    intervals.extend(b - a for a, b in zip(times, times[1:]))
intervals.sort()


def pct(p):
    if not intervals:
        return "-"
    return f"{intervals[min(len(intervals) - 1, int(p / 100 * len(intervals)))]:.3f}"


print(
    f"requests={count} rate={count / (t1 - t0):.1f} targets={len(seen)} "
    f"intervals={len(intervals)} "
    f"median={statistics.median(intervals) if intervals else float('nan'):.3f} "
    f"p99={pct(99)} max={intervals[-1] if intervals else float('nan'):.3f}"
    + (
        f" on_time={100 * sum(i <= 1.1 * interval for i in intervals) / len(intervals):.2f}"
        if interval and intervals
        else ""
    )
)
