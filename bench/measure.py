#!/usr/bin/env python3
"""Measure one benchmark run: wall time, CPU and the peak memory of a whole process tree.

    measure.py run --out REC.json --op OP --tool TOOL --run N
                   [--stdout FILE] [--stderr FILE] [--timeout S] -- CMD...
    measure.py set REC.json KEY=VALUE...

`run` starts CMD under /usr/bin/time and exits with CMD's status (124 on timeout), after
writing REC.json. `set` adds fields (e.g. bytes stored, known only after the run) to a record.

Memory is measured the same way for every tool, because pgBackRest forks worker processes
while walvault is one process: every 50 ms the process tree under /usr/bin/time is listed
from /proc and each process's VmHWM (the kernel's own peak-RSS counter) is noted. The run's
peak is the sum over all processes of their last-seen VmHWM, or /usr/bin/time's %M (the
largest single process, exact) when that is larger, which happens only when a process
lives less than one sampling interval. The largest sum of simultaneous VmRSS values is
recorded too (rss_concurrent_peak_kib) as a lower bound. Shared library pages count once
per process, as RSS always does.
"""

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time

SAMPLE_INTERVAL = 0.05
TIME_FORMAT = "%e %U %S %M"


def read_proc_table():
    """{pid: (ppid, starttime)} for every process; starttime tells a reused pid apart."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue  # exited while we listed
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[19])
    return table


def descendants(root, table):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def read_memory_kib(pid):
    """(VmHWM, VmRSS) in KiB, or None when the process is gone or has no memory (zombie)."""
    hwm = rss = None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        return None
    if hwm is None or rss is None:
        return None
    return hwm, rss


def parse_time_output(path):
    """/usr/bin/time -o writes 'Command exited with non-zero status N' first when it fails:
    the numbers are on the last line."""
    try:
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
        elapsed, user, system, maxrss = lines[-1].split()
        return float(user), float(system), int(maxrss), float(elapsed)
    except (OSError, ValueError, IndexError):
        return None


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-lines:])
    except OSError:
        return ""


def stop_group(proc):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def command_run(args):
    if not args.cmd:
        sys.exit("measure.py run: no command given (put it after --)")
    time_file = args.out + ".time"
    argv = ["/usr/bin/time", "-f", TIME_FORMAT, "-o", time_file, "--"] + args.cmd
    stdout = open(args.stdout or os.devnull, "wb")
    stderr = open(args.stderr or os.devnull, "wb")
    peaks = {}  # (pid, starttime) -> last VmHWM seen
    concurrent_peak = 0
    samples = 0
    timed_out = False
    # The machine is shared: the 1-minute load average as the run starts tells whether
    # something else was running (a figure well above the run's own threads).
    try:
        with open("/proc/loadavg") as f:
            loadavg = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        loadavg = None
    start = time.monotonic()
    # A session of its own, so that a timeout can stop the whole tree.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            start_new_session=True)
    # The pidfd becomes readable the moment the process exits: waiting on it between
    # samples, rather than sleeping, keeps the wall time exact instead of rounded up to
    # the sampling interval (which would make every 50 ms command look alike).
    pidfd = os.pidfd_open(proc.pid)
    end = None
    while True:
        if select.select([pidfd], [], [], 0)[0]:
            end = time.monotonic()
            break
        table = read_proc_table()
        rss_now = 0
        # The tree under /usr/bin/time: the measured command and everything it started.
        for pid in descendants(proc.pid, table):
            mem = read_memory_kib(pid)
            if mem is None:
                continue
            peaks[(pid, table[pid][1])] = mem[0]
            rss_now += mem[1]
        concurrent_peak = max(concurrent_peak, rss_now)
        samples += 1
        if args.timeout and time.monotonic() - start > args.timeout:
            timed_out = True
            stop_group(proc)
            break
        if select.select([pidfd], [], [], SAMPLE_INTERVAL)[0]:
            end = time.monotonic()
            break
    status = proc.wait()
    wall = (end if end is not None else time.monotonic()) - start
    os.close(pidfd)
    stdout.close()
    stderr.close()

    timing = parse_time_output(time_file)
    if timing is None:
        user = system = None
        single_peak = 0
    else:
        user, system, single_peak, _ = timing
    try:
        os.unlink(time_file)
    except FileNotFoundError:
        pass
    if timed_out:
        status = 124
    record = {
        "op": args.op,
        "tool": args.tool,
        "run": args.run,
        "cmd": args.cmd,
        "status": status,
        "ok": status == 0,
        "timed_out": timed_out,
        "wall_s": round(wall, 4),
        "user_s": user,
        "sys_s": system,
        "cpu_s": None if user is None else round(user + system, 3),
        "rss_peak_kib": max(sum(peaks.values()), single_peak),
        "rss_peak_sum_sampled_kib": sum(peaks.values()),
        "rss_single_peak_kib": single_peak,
        "rss_concurrent_peak_kib": concurrent_peak,
        "processes_seen": len(peaks),
        "samples": samples,
        "started_unix": round(time.time() - wall, 3),
        "loadavg1_start": loadavg,
    }
    # Kept for successful runs too: a warning on stderr is worth seeing next to the figures.
    if args.stderr:
        record["stderr_tail"] = tail(args.stderr)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    sys.exit(status if 0 <= status < 256 else 1)


def parse_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def command_set(args):
    with open(args.record) as f:
        record = json.load(f)
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"measure.py set: expected KEY=VALUE, got {pair!r}")
        record[key] = parse_value(value)
    with open(args.record + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(args.record + ".tmp", args.record)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--out", required=True)
    run.add_argument("--op", required=True)
    run.add_argument("--tool", required=True)
    run.add_argument("--run", type=int, required=True)
    run.add_argument("--stdout")
    run.add_argument("--stderr")
    run.add_argument("--timeout", type=float, default=0)
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    setp = sub.add_parser("set")
    setp.add_argument("record")
    setp.add_argument("pairs", nargs="+")
    args = parser.parse_args()
    if args.command == "run":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        command_run(args)
    else:
        command_set(args)


if __name__ == "__main__":
    main()
