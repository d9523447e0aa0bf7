"""The streaming part of bench/RESULTS.md (issue 5), from the lines bench/stream.sh wrote to
stream.jsonl. Every number comes from those lines; a part that did not run says so."""

import json
import os
import statistics


def load(directory):
    path = os.path.join(directory, "stream.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def of_kind(records, kind, **match):
    return [r for r in records if r["kind"] == kind
            and all(r.get(k) == v for k, v in match.items())]


def spread(values, digits=0):
    """'median (min-max)' of the values."""
    f = f"{{:,.{digits}f}}"
    med = statistics.median(values)
    if len(values) == 1:
        return f.format(med)
    return f"{f.format(med)} ({f.format(min(values))}-{f.format(max(values))})"


def tps_ratio(records):
    wv = [r["tps"] for r in of_kind(records, "tps", tool="walvault")]
    rw = [r["tps"] for r in of_kind(records, "tps", tool="pg_receivewal")]
    if not wv or not rw:
        return None, wv, rw
    return statistics.median(wv) / statistics.median(rw), wv, rw


def latency(records, config):
    found = of_kind(records, "latency", config=config)
    return found[0] if found and "p50_ms" in found[0] else None


def targets(records):
    """[(target, measured, verdict)] like report.py's; absent parts are 'not measured'."""
    out = []
    ratio, wv, rw = tps_ratio(records)
    text = ("`pgbench -c 8 -j 2` TPS with walvault as the synchronous standby >= 50% of TPS "
            "with `pg_receivewal --synchronous --slot` (local disk)")
    if ratio is None:
        out.append((text, "not measured", "not measured"))
    else:
        out.append((text, f"{ratio * 100:.0f}% ({statistics.median(wv):,.0f} / "
                    f"{statistics.median(rw):,.0f} tps)",
                    "**met**" if ratio >= 0.5 else "**not met**"))
    lag = of_kind(records, "lag")
    text = "archive lag p99 in asynchronous mode <= sync interval + 1 s"
    if not lag or "lag_p99_s" not in lag[0]:
        out.append((text, "not measured", "not measured"))
    else:
        limit = lag[0]["sync_interval_s"] + 1
        out.append((text, f"{lag[0]['lag_p99_s']:.2f} s (interval {lag[0]['sync_interval_s']} s)",
                    "**met**" if lag[0]["lag_p99_s"] <= limit else "**not met**"))
    local, wv_file = latency(records, "local"), latency(records, "walvault")
    text = ("serial commit latency p50 with synchronous archiving to file:// <= 2 ms above "
            "one fsynced store (the commit with no standby: its own WAL fdatasync)")
    if not local or not wv_file:
        out.append((text, "not measured", "not measured"))
    else:
        above = wv_file["p50_ms"] - local["p50_ms"]
        out.append((text, f"+{above:.2f} ms ({wv_file['p50_ms']:.2f} vs {local['p50_ms']:.2f} ms; "
                    f"p99 {wv_file['p99_ms']:.2f} vs {local['p99_ms']:.2f} ms)",
                    "**met**" if above <= 2 else "**not met**"))
    soak = of_kind(records, "soak")
    text = "agent RSS flat over a 10-minute run at load (start and end)"
    if not soak:
        out.append((text, "not measured", "not measured"))
    else:
        s = soak[0]
        grew = s["rss_end_kib"] - s["rss_start_kib"]
        flat = grew <= max(1024, 0.05 * s["rss_start_kib"])
        out.append((text, f"{s['rss_start_kib'] / 1024:.1f} MiB in the first minute, "
                    f"{s['rss_end_kib'] / 1024:.1f} MiB in the last ({s['seconds'] // 60} min)",
                    "**met**" if flat else "**not met**"))
    return out


LATENCY_LABELS = [
    ("local", "no standby (the commit's own WAL fdatasync)"),
    ("pg_receivewal", "`pg_receivewal --synchronous` to local disk"),
    ("walvault", "walvault wal-stream, synchronous, file://"),
    ("walvault-s3", "walvault wal-stream, synchronous, s3:// through tests/s3/proxy.js to s3rver"),
]


def section(records):
    L = ["## Streaming (wal-stream and the agent)", ""]
    if not records:
        return L + ["Not run: no stream.jsonl (bench/stream.sh did not run).", ""]
    meta = (of_kind(records, "meta") or [{}])[0]
    L += [f"bench/stream.sh on its own PostgreSQL with a pgbench database of scale "
          f"{meta.get('scale', '?')}; `synchronous_commit = on`; walvault's repository and "
          "pg_receivewal's directory on the same file system as PostgreSQL.", ""]

    ratio, wv, rw = tps_ratio(records)
    L += ["### Throughput with a synchronous standby", ""]
    if ratio is None:
        L += ["Not measured.", ""]
    else:
        runs = of_kind(records, "tps")
        L += [f"`pgbench -n -c 8 -j 2 -T {runs[0]['seconds']}` (TPC-B-like), the standby "
              "named in `synchronous_standby_names`; runs alternate between the tools. "
              "Median (min-max) of the runs; standby CPU is user+system seconds of the "
              "standby process during the run.", ""]
        L += ["| standby | runs | TPS | standby CPU (s) | stores |", "|---|---|---|---|---|"]
        for tool, label in (("walvault", "walvault wal-stream (file://)"),
                            ("pg_receivewal", "pg_receivewal --synchronous --slot")):
            rs = of_kind(records, "tps", tool=tool)
            stores = spread([r["fragments"] for r in rs]) if "fragments" in rs[0] else "-"
            L += [f"| {label} | {len(rs)} | {spread([r['tps'] for r in rs])} | "
                  f"{spread([r['standby_cpu_s'] for r in rs], 2)} | {stores} |"]
        L += ["", f"walvault / pg_receivewal: {ratio * 100:.0f}% of the TPS (medians).", ""]

    L += ["### Archive lag, asynchronous", ""]
    lag = of_kind(records, "lag")
    if not lag or "lag_p99_s" not in lag[0]:
        L += ["Not measured.", ""]
    else:
        g = lag[0]
        L += [f"The same load (`-c 8 -j 2 -T {g['seconds']}`, {g['tps']:,.0f} tps) with "
              f"wal-stream asynchronous, `--sync-interval {g['sync_interval_s']}s`. One psql "
              "session samples `pg_current_wal_flush_lsn()` and the standby's `flush_lsn` in "
              "`pg_stat_replication` (what wal-stream reports durable in the repository) every "
              "50 ms; the lag of each newly flushed LSN is the time until a sample shows it "
              "reported (resolution 50 ms).", ""]
        L += ["| samples | measured | p50 (s) | p99 (s) | max (s) |", "|---|---|---|---|---|"]
        L += [f"| {g['samples']} | {g['measured']} | {g['lag_p50_s']:.2f} | {g['lag_p99_s']:.2f} "
              f"| {g['lag_max_s']:.2f} |", ""]

    L += ["### Serial commit latency", ""]
    L += ["1,000 single-row INSERT commits, one at a time (`pgbench -c 1 -t 1000 -l`: each "
          "transaction's latency from pgbench's log).", ""]
    L += ["| synchronous standby | p50 (ms) | p99 (ms) | mean (ms) | max (ms) |",
          "|---|---|---|---|---|"]
    for config, label in LATENCY_LABELS:
        r = latency(records, config)
        if r:
            L += [f"| {label} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['mean_ms']:.2f} | "
                  f"{r['max_ms']:.2f} |"]
        else:
            skipped = of_kind(records, "latency", config=config)
            why = skipped[0].get("skipped", "not run") if skipped else "not run"
            L += [f"| {label} | {why} | | | |"]
    L += [""]

    L += ["### Agent memory over a long run", ""]
    soak = of_kind(records, "soak")
    if not soak:
        L += ["Not measured.", ""]
    else:
        s = soak[0]
        L += [f"`walvault agent` as the synchronous standby (file://, schedule: full every 5 "
              f"min, incremental every minute, 2 fulls kept) for {s['seconds']} s under "
              f"`pgbench -c 2` ({s['tps']:,.0f} tps); {s['backups']} scheduled backups ran "
              "(each in a child process, measured in the backup sections above). The agent's "
              f"VmRSS every 5 s ({s['samples']} samples):", ""]
        L += ["| first sample | largest, first minute | largest, last minute | largest |",
              "|---|---|---|---|"]
        L += [f"| {s['rss_first_kib'] / 1024:.1f} MiB | {s['rss_start_kib'] / 1024:.1f} MiB | "
              f"{s['rss_end_kib'] / 1024:.1f} MiB | {s['rss_max_kib'] / 1024:.1f} MiB |", ""]
    return L
