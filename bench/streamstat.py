#!/usr/bin/env python3
"""Small calculations for bench/stream.sh; every figure comes from the files named.

    streamstat.py emit KIND KEY=VALUE...   one JSON line (numbers as numbers)
    streamstat.py pgbench-tps LOG          the tps pgbench printed
    streamstat.py latency LOG...           KEY=VALUE words: p50/p99/mean/max of pgbench -l logs (ms)
    streamstat.py lag SAMPLES              KEY=VALUE words: archive lag percentiles (s)
    streamstat.py rss SAMPLES              KEY=VALUE words: RSS at start/end/max (KiB)
"""

import bisect
import json
import re
import statistics
import sys


def number(text):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def emit(kind, pairs):
    record = {"kind": kind}
    for pair in pairs:
        key, _, value = pair.partition("=")
        record[key] = number(value)
    print(json.dumps(record, sort_keys=True))


def pgbench_tps(path):
    text = open(path).read()
    match = re.search(r"^tps = ([0-9.]+) \(without initial connection time\)", text, re.M)
    if not match:
        sys.exit(f"{path}: no tps line in pgbench's output")
    print(match.group(1))


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def words(**values):
    print(" ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in values.items()))


def latency(paths):
    # pgbench -l: client_id transaction_no time_us script_no time_epoch time_us_part
    ms = []
    for path in paths:
        for line in open(path):
            fields = line.split()
            if len(fields) >= 3:
                ms.append(int(fields[2]) / 1000)
    if not ms:
        sys.exit("no transactions in the pgbench logs")
    ms.sort()
    words(n=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99),
          mean_ms=statistics.fmean(ms), max_ms=ms[-1])


def lag(path):
    """Each sample: server time, flush LSN, the standby's reported flush LSN. A byte's lag is
    the time from the first sample whose flush LSN covers it to the first sample whose
    reported LSN covers it; measured for each sample's flush LSN."""
    samples = []
    for line in open(path):
        fields = line.strip().split("|")
        if len(fields) == 3 and fields[2]:
            samples.append((float(fields[0]), int(fields[1]), int(fields[2])))
    if len(samples) < 10:
        sys.exit(f"{path}: only {len(samples)} samples")
    reported = [s[2] for s in samples]
    for i in range(1, len(reported)):  # a status update never goes back; guard the search
        reported[i] = max(reported[i], reported[i - 1])
    lags = []
    previous_flush = samples[0][1]
    for t, flush, _ in samples:
        if flush == previous_flush:
            continue  # nothing new was flushed since the last sample
        previous_flush = flush
        j = bisect.bisect_left(reported, flush)
        if j == len(samples):
            continue  # not reported by the end of the sampling: counted below
        lags.append(samples[j][0] - t)
    unreported = sum(1 for _, flush, _ in samples if flush > reported[-1])
    lags.sort()
    words(samples=len(samples), measured=len(lags), unreported=unreported,
          lag_p50_s=percentile(lags, 50), lag_p99_s=percentile(lags, 99), lag_max_s=lags[-1])


def rss(path):
    rows = [tuple(int(x) for x in line.split()) for line in open(path) if len(line.split()) == 2]
    if len(rows) < 3:
        sys.exit(f"{path}: only {len(rows)} samples")
    # The first minute is the start: connections, the first backup, buffers reaching size.
    start = [kib for t, kib in rows if t - rows[0][0] <= 60]
    end = [kib for t, kib in rows if rows[-1][0] - t <= 60]
    # The largest sample of each minute, to see a trend (growth that levels off or not).
    minutes = {}
    for t, kib in rows:
        minute = (t - rows[0][0]) // 60
        minutes[minute] = max(minutes.get(minute, 0), kib)
    series = ",".join(str(minutes[m]) for m in sorted(minutes))
    words(samples=len(rows), rss_start_kib=max(start), rss_end_kib=max(end),
          rss_max_kib=max(kib for _, kib in rows), rss_first_kib=rows[0][1],
          rss_by_minute_kib=series)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "emit":
        emit(args[0], args[1:])
    elif command == "pgbench-tps":
        pgbench_tps(args[0])
    elif command == "latency":
        latency(args)
    elif command == "lag":
        lag(args[0])
    elif command == "rss":
        rss(args[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
