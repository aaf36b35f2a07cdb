#!/usr/bin/env python3
"""The measuring side of bench/restart/run.sh (which starts and stops the
tools): kills, polls every millisecond, writes raw figures as JSON, prints
the table. Every wait here has a deadline.

    bench.py wait PIDFILE... [--timeout S] [--stable S]
    bench.py crash LABEL PIDFILE OUT [--runs N] [--limit S]
    bench.py burst LABEL DIR N OUT [--runs N] [--append] [--limit S] [--settle S]
    bench.py floor LABEL HEALER_TOML OUT [--runs N] [--append] [--limit S] [--spawners N]
                                      (the burst's start commands, no healer)
    bench.py hang LABEL PIDFILE OUT --mode steady|restart [--runs N] [--limit S]
    bench.py timeline LABEL EVENTS    (healer's recoveries in the last burst)
    bench.py reaper -- COMMAND...     (run COMMAND as a child subreaper's child)
    bench.py kill DIR                 (SIGKILL what the pidfiles under DIR name)
    bench.py freeport
    bench.py table RESULTS_DIR
"""

import argparse
import ctypes
import glob
import json
import os
import random
import signal
import socket
import statistics
import sys
import time

POLL = 0.001  # the polling step: 1 ms
now = time.monotonic


def say(*args):
    print(*args, flush=True)


def proc_state(pid):
    """The state letter of `pid` (R, S, T, Z, ...), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    return data[end + 2:end + 3].decode() if end > 0 else None


def alive(pid):
    """Exists and is no zombie."""
    state = proc_state(pid)
    return state is not None and state not in "ZXx"


def running(pid):
    """Alive and not stopped (SIGSTOP)."""
    state = proc_state(pid)
    return state is not None and state not in "ZXxTt"


def read_pid(path):
    try:
        with open(path) as f:
            text = f.readline().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def starts(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def wait_running(pidfiles, timeout, stable):
    """Waits until every pidfile names a running process and has for
    `stable` seconds; returns the pids. Exits 1 after `timeout`."""
    deadline = now() + timeout
    since, seen = None, None
    while True:
        pids = [read_pid(p) for p in pidfiles]
        ok = all(p is not None and running(p) for p in pids)
        if ok and pids == seen:
            if now() - since >= stable:
                return pids
        elif ok:
            since, seen = now(), pids
        else:
            since, seen = None, None
        if now() > deadline:
            bad = [f for f, p in zip(pidfiles, pids) if p is None or not running(p)]
            say(f"bench.py: not running after {timeout:.0f} s: {len(bad)} of {len(pidfiles)}, "
                f"e.g. {bad[:3]}")
            sys.exit(1)
        time.sleep(0.01)


def poll_until(limit, cond):
    """Polls `cond` every millisecond; the elapsed seconds once it is true,
    None after `limit` seconds."""
    start = now()
    while True:
        if cond():
            return now() - start
        if now() - start > limit:
            return None
        time.sleep(POLL)


def write(out, result):
    with open(out, "w") as f:
        json.dump(result, f)


def ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 1)


def cmd_wait(args):
    pids = wait_running(args.pidfiles, args.timeout, args.stable)
    say(" ".join(map(str, pids)) if len(pids) <= 4 else f"{len(pids)} running")


def cmd_crash(args):
    """kill -9 at a random point of the 1 s cycle, poll every 1 ms until the
    pidfile names a new live process."""
    times = []
    for run in range(args.runs):
        (old,) = wait_running([args.pidfile], 30, 0.2)
        time.sleep(1.0 + random.random())  # a random point of the check cycle
        if read_pid(args.pidfile) != old or not running(old):
            say(f"  {args.label}: pid {old} changed before the kill; run {run + 1} skipped")
            continue
        start = now()
        os.kill(old, signal.SIGKILL)
        took = poll_until(args.limit, lambda: (p := read_pid(args.pidfile)) not in (None, old) and alive(p))
        took = None if took is None else now() - start
        times.append(ms(took))
        say(f"  {args.label} run {run + 1}: {'not restarted within %g s' % args.limit if took is None else '%.1f ms' % (took * 1000)}")
        if took is None:
            break
    write(args.out, {"test": "crash", "label": args.label, "times_ms": times, "limit_s": args.limit})


def burst_once(label, pidfiles, startfiles, limit, settle):
    """SIGKILL all at once; the time until every pidfile names a new live
    process; then each must have been started exactly once."""
    n = len(pidfiles)
    old = wait_running(pidfiles, 60, 1.0)
    before = [starts(f) for f in startfiles]
    start = now()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    sent = now() - start
    back = [None] * n
    waiting = set(range(n))
    while waiting and now() - start <= limit:
        for i in list(waiting):
            p = read_pid(pidfiles[i])
            if p is not None and p != old[i] and alive(p):
                back[i] = now() - start
                waiting.discard(i)
        time.sleep(POLL)
    # Anything started twice has done so by now: healer's verifying check
    # comes `grace` (500 ms) after a recovery, Monit and supervisord check
    # every second.
    time.sleep(settle)
    return started_once(label, n, limit, back, startfiles, before, pidfiles, settle,
                        f"SIGKILL to {n} in {ms(sent)} ms; ", {"kill_ms": ms(sent)})


def started_once(label, n, limit, back, startfiles, before, pidfiles, settle, said, extra):
    """One burst's (or floor's) figures from when each came back and the
    start counts: exactly one new start each."""
    after = [starts(f) for f in startfiles]
    new = [a - b for a, b in zip(after, before)]
    twice = [i for i, k in enumerate(new) if k > 1]
    never = [i for i, k in enumerate(new) if k == 0]
    dead = [i for i, p in enumerate(read_pid(p) for p in pidfiles) if p is None or not alive(p)]
    got = sorted(b for b in back if b is not None)
    all_back = None if len(got) < n else got[-1]
    result = {
        "all_back_ms": ms(all_back), "back": len(got),
        "first_ms": ms(got[0]) if got else None,
        "median_ms": ms(statistics.median(got)) if got else None,
        "last_ms": ms(got[-1]) if got else None,
        "deciles_ms": [ms(got[min(len(got) - 1, len(got) * k // 10)]) for k in range(1, 10)] if got else [],
        "started_twice": len(twice), "never_started": len(never), "not_running_after": len(dead),
        "starts_per_process": sorted(set(new)), **extra,
    }
    say(f"  {label}: {said}back: {len(got)}/{n}, "
        f"first {result['first_ms']} ms, median {result['median_ms']} ms, "
        f"all {result['all_back_ms'] if all_back is not None else 'not within %g s' % limit} ms; "
        f"started twice: {len(twice)}, not started: {len(never)}, not running {settle:g} s later: {len(dead)}")
    return result


def earlier_runs(args):
    """With --append, the runs OUT already holds (an earlier round's)."""
    if not args.append or not os.path.exists(args.out):
        return []
    with open(args.out) as f:
        return json.load(f)["each"]


def over_runs(test, label, n, limit, note, runs):
    """The figures of several runs: each run's, and the median run's (by
    when all were back; a run with some never back counts as the slowest)."""
    key = lambda r: (r["all_back_ms"] is None, r["all_back_ms"] or 0)
    mid = sorted(runs, key=key)[(len(runs) - 1) // 2]
    return {
        "test": test, "label": label, "n": n, "limit_s": limit, "note": note, "runs": len(runs),
        **mid,
        "each": runs,
        # The median of all runs' (of the two middle ones for an even count).
        "all_back_ms": None if any(r["all_back_ms"] is None for r in runs)
        else round(statistics.median(r["all_back_ms"] for r in runs), 1),
        "all_back_runs_ms": [r["all_back_ms"] for r in runs],
        "started_twice": sum(r["started_twice"] for r in runs),
        "never_started": sum(r["never_started"] for r in runs),
        "not_running_after": max(r["not_running_after"] for r in runs),
        "starts_per_process": sorted({k for r in runs for k in r["starts_per_process"]}),
    }


def cmd_burst(args):
    """Bursts of N killed at once, `--runs` times (the tool keeps running)."""
    pidfiles = [os.path.join(args.dir, f"svc-{i}.pid") for i in range(args.n)]
    startfiles = [os.path.join(args.dir, f"svc-{i}.starts") for i in range(args.n)]
    runs = earlier_runs(args)
    for _ in range(args.runs):
        runs.append(burst_once(f"{args.label} run {len(runs) + 1}", pidfiles, startfiles, args.limit,
                               args.settle))
    write(args.out, over_runs("burst", args.label, args.n, args.limit, args.note, runs))


def cmd_floor(args):
    """The burst's floor: the start commands of healer's config (each
    target's first recoverer's `argv`, as the `command` recoverer runs it:
    stdin, stdout and stderr /dev/null, a process group of its own, PATH
    only), with no healer, started all at once; the time until every
    pidfile names a new live process. As healer starts each recovery's
    command on a thread of its own, each command is spawned by a process of
    its own (forked beforehand, waiting on a pipe; `--spawners` fewer share
    them out), which then reaps it. Before each run the previous run's
    processes are killed and gone; this process is their subreaper, as
    healer is, and kills and reaps what it started before it exits."""
    import tomllib
    with open(args.config, "rb") as f:
        targets = tomllib.load(f)["target"]
    argvs = [t["recover"][0]["argv"] for t in targets]
    pidfiles = [t["monitor"]["pidfile"] for t in targets]
    startfiles = [argv[3] for argv in argvs]  # svc.sh bg PIDFILE STARTS ID
    n = len(argvs)
    spawners = min(n, args.spawners or n)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    become_subreaper()
    runs = earlier_runs(args)
    for _ in range(args.runs):
        old = [read_pid(p) for p in pidfiles]
        stop_all(args.label, old)
        go, ready = os.pipe()
        children = set()
        for k in range(spawners):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(ready)
                    null = os.open(os.devnull, os.O_RDWR)
                    actions = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
                    os.read(go, 1)  # returns once the parent closes its end
                    mine = [os.posix_spawn(a[0], a, env, file_actions=actions, setpgroup=0)
                            for a in argvs[k::spawners]]
                    for child in mine:
                        os.waitpid(child, 0)
                    code = 0
                finally:
                    os._exit(code)
            children.add(pid)
        os.close(go)
        time.sleep(args.pause)
        before = [starts(f) for f in startfiles]
        start = now()
        os.close(ready)
        back, exited = [None] * n, None
        waiting = set(range(n))
        while (waiting or children) and now() - start <= args.limit:
            for i in list(waiting):
                p = read_pid(pidfiles[i])
                if p is not None and p != old[i] and alive(p):
                    back[i] = now() - start
                    waiting.discard(i)
            while children:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                if not children:
                    exited = now() - start
            time.sleep(POLL)
        for pid in children:  # only past the limit: they are stuck
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        time.sleep(args.settle)
        runs.append(started_once(
            f"{args.label} run {len(runs) + 1}", n, args.limit, back, startfiles, before, pidfiles, args.settle,
            f"{n} start commands from {spawners} spawners, all exited after "
            f"{ms(exited) if exited is not None else 'more than %g s' % args.limit} ms; ",
            {"spawners": spawners, "commands_exited_ms": ms(exited)}))
    stop_all(args.label, [read_pid(p) for p in pidfiles])
    write(args.out, over_runs("floor", args.label, n, args.limit, args.note, runs))


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        say("bench.py: cannot become a child subreaper")
        sys.exit(1)


def stop_all(label, pids):
    """SIGKILL to each of `pids` still alive, until none is; then reaps
    every child (the orphans this subreaper adopted)."""
    for pid in pids:
        if pid is not None and alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if poll_until(10, lambda: not any(p is not None and alive(p) for p in pids)) is None:
        say(f"  {label}: processes still run 10 s after SIGKILL")
        sys.exit(1)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def cmd_hang(args):
    """SIGSTOP, poll every 1 ms until the pidfile names a new running (not
    stopped) process. `restart`: the hang comes 0-100 ms after the process
    was started again (after a kill -9)."""
    times = []
    for run in range(args.runs):
        (old,) = wait_running([args.pidfile], 30, 0.2)
        if args.mode == "steady":
            time.sleep(1.0 + random.random())
            if read_pid(args.pidfile) != old or not running(old):
                say(f"  {args.label}: pid {old} changed before the hang; run {run + 1} skipped")
                continue
            victim = old
        else:
            time.sleep(1.0 + random.random())
            os.kill(old, signal.SIGKILL)
            took = poll_until(args.limit, lambda: (p := read_pid(args.pidfile)) not in (None, old) and running(p))
            if took is None:
                say(f"  {args.label} run {run + 1}: not restarted after kill -9 within {args.limit:g} s")
                times.append(None)
                break
            victim = read_pid(args.pidfile)
            time.sleep(random.random() * 0.1)  # 0-100 ms after it (re)started
        start = now()
        os.kill(victim, signal.SIGSTOP)
        took = poll_until(args.limit, lambda: (p := read_pid(args.pidfile)) not in (None, victim) and running(p))
        took = None if took is None else now() - start
        times.append(ms(took))
        say(f"  {args.label} {args.mode} run {run + 1}: "
            + ("not detected within %g s" % args.limit if took is None else "%.1f ms" % (took * 1000)))
        if took is None:
            # Let it go on, so the next run starts from a running process.
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
            if args.stop_on_miss:
                break
    write(args.out, {"test": "hang", "label": args.label, "mode": args.mode, "times_ms": times,
                     "limit_s": args.limit})


def cmd_timeline(args):
    """What healer's event log says about the last burst: when, after the
    first exit was pushed, the recoveries started and their commands
    finished (the log has millisecond timestamps)."""
    from datetime import datetime
    at = lambda e: datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
    with open(args.events) as f:
        events = [json.loads(line) for line in f if line.strip()]
    pushes = [e for e in events if e["event"] == "checked" and e.get("pushed") and e["status"] == "CRITICAL"]
    if not pushes:
        say(f"  {args.label}: no pushed exit in {args.events}")
        return
    # The last burst: the pushes up to a second apart that end the log's.
    times = sorted(at(e) for e in pushes)
    t0 = times[-1]
    for t in reversed(times):
        if t0 - t > 1.0:
            break
        t0 = t
    spans = {}
    for e in events:
        if at(e) >= t0 and e["event"] in ("checked", "attempt_started", "recoverer_finished"):
            if e["event"] == "checked" and not (e.get("pushed") and e["status"] == "CRITICAL"):
                continue
            spans.setdefault(e["event"], []).append((at(e) - t0) * 1000.0)
    part = lambda k, what: (f"{what} {len(spans[k])}: {min(spans[k]):.0f}-{max(spans[k]):.0f} ms "
                            f"(median {statistics.median(spans[k]):.0f})") if k in spans else f"no {what}"
    started, late, attempts = {}, 0, {}
    for e in events:
        if at(e) < t0:
            continue
        if e["event"] == "attempt_started":
            started.setdefault(e["target"], at(e))
            attempts[e["target"]] = attempts.get(e["target"], 0) + 1
        elif e["event"] == "checked" and e.get("pushed") and e["status"] == "CRITICAL":
            late += e["target"] in started
    say(f"  {args.label}, healer's event log, from the first pushed exit: "
        + "; ".join([part("checked", "exits pushed"), part("attempt_started", "recoveries started"),
                     part("recoverer_finished", "restart commands finished")])
        + f"; pushed exits that arrived after their target's recovery had started: {late}; "
        f"targets with more than one recovery attempt: {sum(1 for n in attempts.values() if n > 1)}")


def cmd_reaper(args):
    """Runs COMMAND as the child of a child subreaper that reaps every
    orphan at once (the job init does on a real machine; here PID 1 reaps
    only now and then, and a zombie counts as running for some tools)."""
    become_subreaper()
    child = os.fork()
    if child == 0:
        os.execvp(args.command[0], args.command)
    forward = lambda sig, _frame: os.kill(child, sig)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            sys.exit(0)
        except InterruptedError:
            continue
        if pid == child:
            sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


MARKERS = (b"sleep\x00100000\x00", b"hangsrv ")


def cmd_kill(args):
    """SIGKILL (then SIGCONT) every process a pidfile under DIR names, if
    it is one of ours (a `sleep 100000 ID` or a hangsrv)."""
    for path in glob.glob(os.path.join(args.dir, "**", "*.pid"), recursive=True):
        pid = read_pid(path)
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if any(cmdline.startswith(m) for m in MARKERS):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cmd_freeport(_args):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        say(s.getsockname()[1])


# ---------------------------------------------------------------- the table

def load(results):
    out = {}
    for path in sorted(glob.glob(os.path.join(results, "*.json"))):
        with open(path) as f:
            out[os.path.basename(path)[:-5]] = json.load(f)
    return out


def fmt(value):
    if value is None:
        return "—"
    return f"{value:,.1f} ms" if value < 10000 else f"{value / 1000:,.2f} s"


def summary(times, limit):
    got = sorted(t for t in times if t is not None)
    missed = len(times) - len(got)
    if not got:
        return None, f"not detected within {limit:g} s", "—", "—", missed
    return statistics.median(got), fmt(got[0]), fmt(statistics.median(got)), fmt(got[-1]), missed


def ratio(mine, theirs):
    if mine is None or theirs is None:
        return "—"
    return f"{theirs / mine:,.1f}x"


def goals(r):
    """The issue's targets, met or not, from the figures."""
    med = lambda k: summary(r[k]["times_ms"], r[k]["limit_s"])[0] if k in r else None
    healer = med("crash-healer-watch")
    if healer is not None:
        for key, peer in (("crash-monit", "Monit"), ("crash-supervisord", "supervisord")):
            if med(key) is not None:
                x = med(key) / healer
                say(f"- Goal: crash to restart, healer (watch) at least 10x faster than {peer} (medians): "
                    f"{'met' if x >= 10 else 'missed'} ({x:,.1f}x).")
    b, f = r.get("burst-healer"), r.get("burst-floor")
    if b and f:
        x = b["all_back_ms"] / f["all_back_ms"] if b["all_back_ms"] and f["all_back_ms"] else None
        ok = x is not None and x <= 1.5 and b["started_twice"] == 0 and b["never_started"] == 0
        say(f"- Goal: burst of {b['n']}, healer has all running again within 1.5x the time the same "
            f"{f['n']} start commands take alone, none started twice: {'met' if ok else 'missed'} "
            f"(all back after {fmt(b['all_back_ms'])} against {fmt(f['all_back_ms'])} alone, "
            f"{'%.2fx' % x if x is not None else '—'} (medians of {b['runs']} and {f['runs']} runs); "
            f"{b['started_twice']} started twice, {b['never_started']} not started).")
        pairs = [h / g for h, g in zip(b["all_back_runs_ms"], f["all_back_runs_ms"]) if h and g]
        if b["runs"] == f["runs"] and pairs:
            say(f"  Round by round (each burst over the floor run right after it): "
                + ", ".join(f"{x:.2f}x" for x in pairs) + f"; median {statistics.median(pairs):.2f}x.")
    for mode in ("steady", "restart"):
        h = med(f"hang-{mode}-healer")
        if f"hang-{mode}-healer" in r:
            say(f"- Hang ({mode}): healer " + ("replaced the stopped process" if h is not None else "did not replace it")
                + (f", median {fmt(h)}" if h is not None else "") + "; "
                + ", ".join(f"{name} " + (f"median {fmt(med(k))}" if med(k) is not None else
                                          f"not detected within {r[k]['limit_s']:g} s")
                            for name, k in (("healer by `stopped_for`", f"hang-{mode}-healer-stopped"),
                                            ("Monit", f"hang-{mode}-monit"),
                                            ("supervisord", f"hang-{mode}-supervisord"))
                            if k in r) + ".")


def cmd_table(args):
    r = load(args.results)

    def row(test, tool, key, base_key):
        result = r[key]
        med, lo, mid, hi, missed = summary(result["times_ms"], result["limit_s"])
        base = r.get(base_key)
        base_med = summary(base["times_ms"], base["limit_s"])[0] if base else None
        n = len(result["times_ms"])
        if med is None:
            cells = [lo, "—", "—"]
            vs = f"> {result['limit_s'] * 1000 / base_med:,.0f}x" if base_med else "—"
        else:
            cells = [lo, mid, hi]
            vs = "1x" if key == base_key else ratio(base_med, med)
        note = f"{n} run{'s' if n != 1 else ''}" + (f", {missed} not restarted within {result['limit_s']:g} s" if missed else "")
        say(f"| {test} | {tool} | " + " | ".join(cells) + f" | {vs} | {note} |")

    say("| test | tool | min | median | max | peer median / healer median | runs |")
    say("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    crash = [("crash-healer-watch", "healer, process watch (pidfd push), interval 1 s"),
             ("crash-healer-poll", "healer, polling only (`watch = false`), interval 1 s"),
             ("crash-supervisord", "supervisord (`autorestart`, `startsecs=0`)"),
             ("crash-monit", "Monit (`set daemon 1`, pidfile)")]
    for key, tool in crash:
        if key in r:
            row("crash → restart", tool, key, "crash-healer-watch")
    for mode, what in (("steady", "hang → restart, steady state"),
                       ("restart", "hang → restart, 0-100 ms after a restart")):
        base_key = f"hang-{mode}-healer"
        for tool_key, tool in (("healer", "healer, `http` monitor, interval 1 s, timeout 1 s"),
                               ("healer-stopped", "healer, `process` monitor, interval 1 s, `stopped_for = \"1s\"`"),
                               ("monit", "Monit, `if failed port ... protocol http`, timeout 1 s"),
                               ("supervisord", "supervisord (no hang detection)")):
            key = f"hang-{mode}-{tool_key}"
            if key in r:
                row(what, tool, key, base_key)
    say("")
    bursts = [(k, v) for k, v in r.items() if k.startswith("burst-")]
    if bursts:
        base, floor = r.get("burst-healer"), r.get("burst-floor")
        say(f"| burst: {bursts[0][1]['n']} killed at once (median run) | runs | first back | median back | "
            "all back | all back, each run | all back / floor | all back vs healer | started twice | "
            "not started | running after |")
        say("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        order = ["burst-floor", "burst-healer", "burst-healer-default", "burst-supervisord", "burst-monit"]
        for key in order:
            if key not in r:
                continue
            b = r[key]
            all_back = fmt(b["all_back_ms"]) if b["all_back_ms"] is not None else \
                f"{b['back']}/{b['n']} within {b['limit_s']:g} s"
            each = ", ".join("—" if t is None else f"{t:.0f}" for t in b["all_back_runs_ms"])
            over = f"{b['all_back_ms'] / floor['all_back_ms']:,.2f}x" \
                if floor and floor["all_back_ms"] and b["all_back_ms"] is not None else "—"
            vs = ratio(base["all_back_ms"], b["all_back_ms"]) if base and key != "burst-floor" else "—"
            say(f"| {b['note']} | {b['runs']} | {fmt(b['first_ms'])} | {fmt(b['median_ms'])} | {all_back} | "
                f"{each} | {over} | {vs} | {b['started_twice']} | {b['never_started']} | "
                f"{b['n'] - b['not_running_after']}/{b['n']} |")
    say("")
    goals(r)
    say("")
    say("Raw figures (ms; — = not restarted within the limit):")
    for key, v in r.items():
        if "times_ms" in v:
            say(f"- {key}: " + ", ".join("—" if t is None else f"{t}" for t in v["times_ms"]))
        else:
            say(f"- {key}: " + json.dumps({k: x for k, x in v.items() if k not in ("test", "label", "each")}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("wait")
    s.add_argument("pidfiles", nargs="+")
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--stable", type=float, default=0.0)
    s = sub.add_parser("crash")
    s.add_argument("label"); s.add_argument("pidfile"); s.add_argument("out")
    s.add_argument("--runs", type=int, default=10)
    s.add_argument("--limit", type=float, default=10)
    s = sub.add_parser("burst")
    s.add_argument("label"); s.add_argument("dir"); s.add_argument("n", type=int); s.add_argument("out")
    s.add_argument("--limit", type=float, default=30)
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--append", action="store_true", help="add to the runs OUT holds")
    s.add_argument("--settle", type=float, default=3)
    s.add_argument("--note", default="")
    s = sub.add_parser("floor")
    s.add_argument("label"); s.add_argument("config"); s.add_argument("out")
    s.add_argument("--runs", type=int, default=1)
    s.add_argument("--append", action="store_true", help="add to the runs OUT holds")
    s.add_argument("--limit", type=float, default=30)
    s.add_argument("--settle", type=float, default=1)
    s.add_argument("--pause", type=float, default=1, help="idle seconds before each run")
    s.add_argument("--spawners", type=int, default=0, help="processes spawning the commands (0: one each)")
    s.add_argument("--note", default="")
    s = sub.add_parser("hang")
    s.add_argument("label"); s.add_argument("pidfile"); s.add_argument("out")
    s.add_argument("--mode", choices=("steady", "restart"), required=True)
    s.add_argument("--runs", type=int, default=5)
    s.add_argument("--limit", type=float, default=10)
    s.add_argument("--stop-on-miss", action="store_true")
    s = sub.add_parser("timeline")
    s.add_argument("label"); s.add_argument("events")
    s = sub.add_parser("reaper")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s = sub.add_parser("kill")
    s.add_argument("dir")
    sub.add_parser("freeport")
    s = sub.add_parser("table")
    s.add_argument("results")
    args = p.parse_args()
    if args.cmd == "reaper" and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    {"wait": cmd_wait, "crash": cmd_crash, "burst": cmd_burst, "floor": cmd_floor, "hang": cmd_hang,
     "reaper": cmd_reaper, "timeline": cmd_timeline, "kill": cmd_kill, "freeport": cmd_freeport,
     "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
