#!/usr/bin/env python3
"""Turn the records of one bench/bench.sh session into bench/results.json and bench/RESULTS.md.

    report.py --in DIR --markdown RESULTS.md --json results.json
              [--elapsed S] [--git-rev REV] [--bench-status N]

DIR holds meta.json, runs/*.json (one per timed run, from measure.py) and restore-check.txt.
Every number in the output comes from those files. Exit status 3: the report was written but
some runs failed.
"""

import argparse
import datetime
import glob
import json
import os
import statistics
import sys

import report_stream

MIB = 1024 * 1024
MB = 1000 * 1000

# (key, label, how to get the value from a run record, decimals)
METRICS = [
    ("wall_s", "wall time (s)", lambda r: r["wall_s"]),
    ("mb_s", "throughput (MB/s)",
     lambda r: r["bytes_processed"] / MB / r["wall_s"] if r.get("bytes_processed") else None),
    ("cpu_s", "CPU user+sys (s)", lambda r: r.get("cpu_s")),
    ("rss_mib", "peak RSS, all processes (MiB)", lambda r: r["rss_peak_kib"] / 1024),
    ("stored_mib", "bytes stored (MiB)",
     lambda r: r["bytes_stored"] / MIB if "bytes_stored" in r else None),
]

TOOL_NAMES = {
    "walvault": "walvault",
    "pgbackrest": "pgBackRest",
    "pg_basebackup": "pg_basebackup -X none",
    "pg_basebackup_fetch": "pg_basebackup -X fetch",
    "tar": "tar (read)",
    "dd": "dd (write)",
    "s3xfer": "walvault's S3 backend (bench/s3xfer)",
    "awscli": "awscli (`aws s3 cp`)",
    "walvault-s3": "walvault to s3://",
    "walvault-file": "walvault to file://",
}

SECTIONS = [
    ("Full backup, local source", "backup-local", ["walvault", "pgbackrest"],
     "walvault `backup --full --source local --jobs 2` against pgBackRest `backup --type=full` "
     "(process-max=2)."),
    ("Full backup, stream source", "backup-stream",
     ["walvault", "pg_basebackup", "pg_basebackup_fetch"],
     "walvault `backup --full --source stream --jobs 2` (BASE_BACKUP on a replication "
     "connection) against the raw stream, `pg_basebackup -Ft -X none -c fast -D - > /dev/null`, "
     "and the same with `-X fetch`. With `-X none` the server ends the backup only once the "
     "last segment is archived and checks that once a second, so up to a second of each run "
     "is waiting; `-X fetch` appends a segment or two of WAL from pg_wal to the tar instead "
     "and does not wait: the stricter yardstick."),
    ("Restore", "restore", ["walvault", "pgbackrest"],
     "walvault `restore --to DIR --jobs 2` of its newest backup against pgBackRest `restore "
     "--pg1-path=DIR` (default type, newest backup) into a new empty directory; only the "
     "restore command is timed, not PostgreSQL's recovery."),
    ("WAL push of one 16 MiB segment", "wal-push", ["walvault", "pgbackrest"],
     "walvault `wal-push FILE` against pgBackRest `archive-push FILE` (archive-async off), "
     "each with a fresh segment (see Method)."),
]


def fmt(value, key):
    if value is None:
        return "—"
    if key == "ratio":
        return f"{value:.2f}"
    if key == "wall_s" and value < 1:
        return f"{value:.3f}"  # WAL pushes take tens of milliseconds
    if key in ("wall_s", "cpu_s"):  # /usr/bin/time's CPU figures have 10 ms steps
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if key == "mb_s":
        return f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:.1f}"


def load(directory):
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "runs", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        record["seq"] = int(os.path.basename(path).split("-", 1)[0])
        runs.append(record)
    checks = {}
    for name in ("restore-check", "chain-check", "s3-check"):
        path = os.path.join(directory, name + ".txt")
        checks[name] = "not run (the benchmark stopped before it)"
        if os.path.exists(path):
            with open(path) as f:
                checks[name] = f.read().strip()
    ideal = {}
    for path in sorted(glob.glob(os.path.join(directory, "ideal", "run-*.json"))):
        with open(path) as f:
            record = json.load(f)
        ideal[int(record["run"])] = record
    meta["s3"] = {}
    path = os.path.join(directory, "s3-meta.json")
    if os.path.exists(path):
        with open(path) as f:
            meta["s3"] = json.load(f)
    return meta, runs, checks, ideal


class Stats:
    def __init__(self, runs):
        self.ok = [r for r in runs if r["ok"]]

    def values(self, getter):
        out = []
        for r in self.ok:
            v = getter(r)
            if v is not None:
                out.append(v)
        return out

    def summary(self, getter):
        """(median, min, max) or None."""
        v = self.values(getter)
        if not v:
            return None
        return statistics.median(v), min(v), max(v)


def group(runs, op, tool):
    return Stats([r for r in runs if r["op"] == op and r["tool"] == tool])


def median_of(runs, op, tool, key="wall_s"):
    getter = dict((k, g) for k, _, g in METRICS)[key]
    s = group(runs, op, tool).summary(getter)
    return None if s is None else s[0]


def cell(summary, key):
    if summary is None:
        return "—"
    med, lo, hi = summary
    return f"{fmt(med, key)} ({fmt(lo, key)}–{fmt(hi, key)})"


def section_table(runs, op, tools):
    return compare_table(runs, [(TOOL_NAMES[t], op, t) for t in tools])


def compare_table(runs, columns):
    """columns: [(name, op, tool)]; the first is compared with each of the others."""
    stats = [group(runs, op, t) for _, op, t in columns]
    names = [name for name, _, _ in columns]
    head = "| metric: median (min–max) | " + " | ".join(
        f"{n}, {len(s.ok)} runs" for n, s in zip(names, stats)) + " | " + " | ".join(
        f"{names[0]} / {n}" for n in names[1:]) + " |"
    lines = [head, "|---" * (2 * len(columns)) + "|"]
    for key, label, getter in METRICS:
        summaries = [s.summary(getter) for s in stats]
        if all(x is None for x in summaries):
            continue
        first = summaries[0]
        ratios = [first[0] / x[0] if first and x and x[0] else None for x in summaries[1:]]
        lines.append(f"| {label} | " + " | ".join(cell(x, key) for x in summaries) + " | "
                     + " | ".join(fmt(r, "ratio") for r in ratios) + " |")
    return lines


def raw_table(runs):
    rows = [
        ("BASE_BACKUP stream to /dev/null (`pg_basebackup -Ft -X none`)", "backup-stream",
         "pg_basebackup"),
        ("the same without the archive wait (`-X fetch`)", "backup-stream",
         "pg_basebackup_fetch"),
        ("read the data directory (tar, page cache warm)", "read-datadir", "tar"),
        ("write its size with dd conv=fsync", "write-datadir-size", "dd"),
    ]
    lines = ["| limit | runs | wall time (s) | throughput (MB/s) | CPU user+sys (s) |",
             "|---|---|---|---|---|"]
    getters = dict((k, g) for k, _, g in METRICS)
    for label, op, tool in rows:
        s = group(runs, op, tool)
        lines.append(f"| {label} | {len(s.ok)} | {cell(s.summary(getters['wall_s']), 'wall_s')} | "
                     f"{cell(s.summary(getters['mb_s']), 'mb_s')} | "
                     f"{cell(s.summary(getters['cpu_s']), 'cpu_s')} |")
    return lines


def targets(runs):
    """[(target, measured, verdict)]; a missing measurement is 'not measured', never 'met'."""
    out = []

    def ratio_target(text, num, den, limit):
        if num is None or den is None or den == 0:
            out.append((text, "not measured", "not measured"))
            return
        r = num / den
        out.append((text, f"{r:.3f}x ({fmt(num, 'wall_s')} s / {fmt(den, 'wall_s')} s)",
                    "**met**" if r <= limit else "**not met**"))

    ratio_target("local full backup wall time <= 0.35x pgBackRest",
                 median_of(runs, "backup-local", "walvault"),
                 median_of(runs, "backup-local", "pgbackrest"), 0.35)
    ratio_target("stream full backup wall time <= 1.15x raw BASE_BACKUP stream "
                 "(`pg_basebackup -X none`, includes the server's archive wait)",
                 median_of(runs, "backup-stream", "walvault"),
                 median_of(runs, "backup-stream", "pg_basebackup"), 1.15)
    ratio_target("the same against `pg_basebackup -X fetch` (no archive wait; stricter)",
                 median_of(runs, "backup-stream", "walvault"),
                 median_of(runs, "backup-stream", "pg_basebackup_fetch"), 1.15)
    ratio_target("restore wall time <= 0.85x pgBackRest",
                 median_of(runs, "restore", "walvault"),
                 median_of(runs, "restore", "pgbackrest"), 0.85)
    ratio_target("restore wall time <= 1.2x dd write of the same size",
                 median_of(runs, "restore", "walvault"),
                 median_of(runs, "write-datadir-size", "dd"), 1.2)
    ratio_target("wal-push wall time <= 0.5x pgBackRest archive-push",
                 median_of(runs, "wal-push", "walvault"),
                 median_of(runs, "wal-push", "pgbackrest"), 0.5)
    wv = [r for r in runs if r["tool"] == "walvault" and r["ok"]]
    if wv:
        worst = max(wv, key=lambda r: r["rss_peak_kib"])
        mib = worst["rss_peak_kib"] / 1024
        out.append(("peak RSS of all walvault processes <= 48 MiB with 2 jobs (largest of every "
                    "walvault run against file://; the S3 runs are in the S3 section)",
                    f"{mib:.1f} MiB ({worst['op']}, run {worst['run']})",
                    "**met**" if mib <= 48 else "**not met**"))
    else:
        out.append(("peak RSS of all walvault processes <= 48 MiB with 2 jobs",
                    "not measured", "not measured"))
    return out


# ---------------------------------------------------------------------------------------
# S3

S3_XFER_COLUMNS = {
    op: [("walvault's S3 backend (bench/s3xfer)", op, "s3xfer"), ("awscli", op, "awscli")]
    for op in ("s3-put", "s3-get")
}


def s3_targets(runs):
    out = []
    mb_s = dict((k, g) for k, _, g in METRICS)["mb_s"]
    for op, what in (("s3-put", "put"), ("s3-get", "get")):
        text = (f"{what} of 1 GiB through walvault's S3 backend: transfer rate >= awscli's "
                "(`aws s3 cp`, same s3rver, both directly)")
        wv = group(runs, op, "s3xfer").summary(mb_s)
        aws = group(runs, op, "awscli").summary(mb_s)
        if wv is None or aws is None or not aws[0]:
            out.append((text, "not measured", "not measured"))
            continue
        r = wv[0] / aws[0]
        out.append((text, f"{r:.2f}x ({fmt(wv[0], 'mb_s')} MB/s / {fmt(aws[0], 'mb_s')} MB/s)",
                    "**met**" if r >= 1 else "**not met**"))
    s3 = median_of(runs, "s3cmp-backup", "walvault-s3")
    fl = median_of(runs, "s3cmp-backup", "walvault-file")
    text = ("full backup to s3:// (s3rver, directly) wall time <= 1.3x the same to a local "
            "directory (file://)")
    if s3 is None or not fl:
        out.append((text, "not measured", "not measured"))
    else:
        out.append((text, f"{s3 / fl:.3f}x ({fmt(s3, 'wall_s')} s / {fmt(fl, 'wall_s')} s)",
                    "**met**" if s3 / fl <= 1.3 else "**not met**"))
    return out


def s3_section(runs, meta, checks):
    s3 = meta.get("s3") or {}
    n = s3.get("runs", 0)
    L = ["## S3 (s3rver)", ""]
    if not s3:
        L += [f"Not run: {checks['s3-check']}.", ""]
        return L
    L += [f"One s3rver {s3.get('s3rver_version', '?')} (node {s3.get('node_version', '?')}; "
          "tests/s3, started by tests/integration/lib.sh's `wv_s3_start`) on this machine, "
          "its objects in files on the same disk. **Every request here goes directly to "
          "s3rver, not through tests/s3/proxy.js**: the proxy checks each request's SigV4 "
          "signature and payload hash and stages every PUT in a bucket of its own before "
          "renaming it into place, which costs throughput that belongs to the proxy, not to "
          "the client. Direct access uses s3rver's own account (key and secret `S3RVER`). "
          "s3rver is one Node.js process: on this machine it is the bottleneck of every "
          "transfer (its CPU is not in the figures, which are the client's), so these rates "
          "say how the clients compare against one slow store, not what either reaches "
          "against S3. The CPU figures are what each client spends for the same bytes.", ""]
    L += ["### 1 GiB put and get: walvault's S3 backend against awscli", "",
          f"1 GiB of random bytes (incompressible; a file in the page cache), {n} rounds, the "
          "first tool alternating. walvault: `bench/s3xfer`, a small C program linked with "
          "walvault's own `libwv_storage.a` and `libwv_common.a` that calls the storage API "
          "and nothing else (no compression, no encryption): `storage_put_begin` / "
          "`storage_put_write` (1 MiB at a time) / `storage_put_commit` (the streaming writer "
          "a backup's packs go through: a multipart upload of 8 MiB parts, 4 in flight), and "
          "`storage_get_stream` (one GET) to standard output, `/dev/null`. awscli: Debian's "
          f"`{s3.get('awscli_version', 'aws')}`, configured by environment variables only, "
          "`aws --endpoint-url URL s3 cp --only-show-errors FILE s3://...` and `aws ... s3 cp "
          "s3://... -` to `/dev/null`, with its default settings (8 MiB parts, 10 requests in "
          "flight, ranged GETs in parallel); its wall time includes starting Python. Each put "
          "goes to a key of its own, is compared byte for byte with the source in s3rver's "
          "directory afterwards (untimed; see the S3 check above) and deleted; both tools get "
          "the same object, put once beforehand by awscli.", ""]
    for title, op in (("Put (upload)", "s3-put"), ("Get (download)", "s3-get")):
        L += [f"{title}:", ""]
        L += compare_table(runs, S3_XFER_COLUMNS[op])
        L += [""]
    L += ["### Full backup and restore: s3:// against file://", "",
          "Two fresh repositories with the same key, filled in the same run from the same "
          "cluster (the benchmark's database as it is after everything above): "
          "`s3://BUCKET/bench-repo` on s3rver and a new directory on the local disk. "
          "`archive_command` pushes every segment to both (`walvault wal-push` twice), the "
          "repository being backed up to first. walvault `backup --full --source local "
          f"--jobs 2` to each ({n} each, alternating), then `restore --to DIR --jobs 2` of "
          f"each one's newest backup ({n} each, alternating, into a new directory deleted "
          "afterwards). Bytes stored: the objects (s3rver's metadata files left out) or files "
          "the backup added under `packs/` and `backups/`.", ""]
    L += ["Full backup:", ""]
    L += compare_table(runs, [("walvault to s3://", "s3cmp-backup", "walvault-s3"),
                              ("walvault to file://", "s3cmp-backup", "walvault-file")])
    stored = summarize([r.get("bytes_stored") for r in runs if r["ok"] and
                        r["op"] == "s3cmp-backup" and r["tool"] == "walvault-s3"])
    put_rate = group(runs, "s3-put", "s3xfer").summary(dict((k, g) for k, _, g in METRICS)["mb_s"])
    file_wall = median_of(runs, "s3cmp-backup", "walvault-file")
    if stored and put_rate and file_wall:
        floor = stored[0] / MB / put_rate[0]
        L += ["", f"An estimate of what s3rver alone needs for this backup: the bytes it stored "
              f"(median {stored[0] / MIB:.1f} MiB) at the rate walvault's backend put 1 GiB "
              f"into it above (median {fmt(put_rate[0], 'mb_s')} MB/s) take {floor:.2f} s, "
              f"{floor / file_wall:.2f}x the file:// backup's median wall time "
              f"({fmt(file_wall, 'wall_s')} s), before any PostgreSQL or WAL work (the target "
              "is 1.3x)."]
    L += ["", "Restore:", ""]
    L += compare_table(runs, [("walvault from s3://", "s3cmp-restore", "walvault-s3"),
                              ("walvault from file://", "s3cmp-restore", "walvault-file")])
    L += [""]
    s3_runs = [r for r in runs if r["op"] in ("s3-put", "s3-get", "s3cmp-backup",
                                               "s3cmp-restore")]
    loads = [r["loadavg1_start"] for r in s3_runs if r.get("loadavg1_start") is not None]
    if loads:
        L += [f"1-minute load average as each of these {len(loads)} runs started: median "
              f"{statistics.median(loads):.2f} ({min(loads):.2f}–{max(loads):.2f}); at the start "
              f"and end of the S3 part: {' '.join(s3.get('loadavg_start', []))} / "
              f"{s3.get('loadavg_end', '?')} (1, 5, 15 min).", ""]
    return L


# ---------------------------------------------------------------------------------------
# Incremental backups

KIB = 1024
INCR_LOAD = "`pgbench -c 2 -t 1500`"

MANIFEST_GROUPS = [
    ("full, local source (full-backup section)", "backup-local"),
    ("full, stream source (full-backup section)", "backup-stream"),
    ("full before each load (incremental section)", "incr-parent"),
    ("incremental after one load", "backup-incr"),
    ("full starting the chain", "chain-base"),
    ("incrementals 1–10 of the chain", "chain-incr"),
    ("full at the end of the chain (same data as the 10th incremental)", "chain-full"),
]


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def by_run(runs, op, tool):
    return {r["run"]: r for r in runs if r["op"] == op and r["tool"] == tool and r["ok"]}


def incr_reps(runs, ideal):
    """[(repetition, ideal record, walvault incremental, pgBackRest incremental)], None where
    missing."""
    wv = by_run(runs, "backup-incr", "walvault")
    pg = by_run(runs, "backup-incr", "pgbackrest")
    return [(n, ideal.get(n), wv.get(n), pg.get(n)) for n in sorted(set(ideal) | set(wv) | set(pg))]


def ideal_ratios(runs, ideal, tool):
    out = []
    for _, i, w, p in incr_reps(runs, ideal):
        rec = w if tool == "walvault" else p
        if i and rec and i.get("ideal_lz4_concat_bytes") and "bytes_stored" in rec:
            out.append(rec["bytes_stored"] / i["ideal_lz4_concat_bytes"])
    return out


def parent_ok(rec):
    """Whether the incremental's parent is the backup it should have: walvault's own word
    (list --json), pgBackRest's label (an incremental's label starts with its full's)."""
    if rec is None:
        return None
    want = rec.get("expected_parent")
    if rec["tool"] == "walvault":
        return rec.get("list_type") == "incr" and rec.get("list_parent") == want
    label = str(rec.get("backup_id", ""))
    return label.startswith(f"{want}_") and label.endswith("I")


def yes_no(v):
    return "—" if v is None else ("yes" if v else "**no**")


def mib(v):
    return "—" if v is None else f"{v / MIB:.2f}"


def kib0(v):
    return "—" if v is None else f"{v / KIB:.0f}"


def count0(v):
    return "—" if v is None else f"{v:.0f}"


def pct(v, digits=2):
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def manifest_records(runs):
    return [r for r in runs if r["tool"] == "walvault" and r["ok"] and r.get("manifest_bytes")
            and r.get("db_bytes")]


def incremental_targets(runs, ideal):
    out = []
    wv = median_of(runs, "backup-incr", "walvault")
    pg = median_of(runs, "backup-incr", "pgbackrest")
    if wv is None or not pg:
        out.append((f"incremental backup wall time after {INCR_LOAD} <= 0.25x pgBackRest's "
                    "incremental", "not measured", "not measured"))
    else:
        out.append((f"incremental backup wall time after {INCR_LOAD} <= 0.25x pgBackRest's "
                    "incremental (`--type=incr`)",
                    f"{wv / pg:.3f}x ({fmt(wv, 'wall_s')} s / {fmt(pg, 'wall_s')} s)",
                    "**met**" if wv / pg <= 0.25 else "**not met**"))
    s = summarize(ideal_ratios(runs, ideal, "walvault"))
    text = ("bytes stored by walvault's incremental <= 1.25x the ideal (lz4 -1 of the changed "
            "8 KiB pages)")
    if s is None:
        out.append((text, "not measured", "not measured"))
    else:
        n = len(ideal_ratios(runs, ideal, "walvault"))
        out.append((text, f"{s[0]:.2f}x (median of {n} repetitions; {s[1]:.2f}x–{s[2]:.2f}x)",
                    "**met**" if s[0] <= 1.25 else "**not met**"))
    recs = manifest_records(runs)
    text = ("manifest size <= 0.1% of the database size (largest manifest of every walvault "
            "backup measured)")
    if not recs:
        out.append((text, "not measured", "not measured"))
    else:
        worst = max(recs, key=lambda r: r["manifest_bytes"] / r["db_bytes"])
        share = worst["manifest_bytes"] / worst["db_bytes"]
        out.append((text, f"{pct(share, 3)} ({worst['manifest_bytes'] / KIB:.0f} KiB of "
                          f"{worst['db_bytes'] / MIB:.0f} MiB; {worst['op']} run {worst['run']})",
                    "**met**" if share <= 0.001 else "**not met**"))
    inc = median_of(runs, "restore-incr10", "walvault")
    full = median_of(runs, "restore-full10", "walvault")
    text = "restore of the 10th incremental in a row <= 1.2x restore of a full of the same data"
    if inc is None or not full:
        out.append((text, "not measured", "not measured"))
    else:
        out.append((text, f"{inc / full:.3f}x ({fmt(inc, 'wall_s')} s / {fmt(full, 'wall_s')} s)",
                    "**met**" if inc / full <= 1.2 else "**not met**"))
    return out


def incremental_sections(runs, ideal, meta):
    L = []
    n_incr = meta["runs"].get("incremental", 0)
    L += ["## Incremental backup after a pgbench load", "",
          f"From a fresh full backup by each tool, {INCR_LOAD} and `CHECKPOINT`, then walvault "
          "`backup --incremental --source local --jobs 2` against pgBackRest `backup "
          f"--type=incr` (process-max=2); {n_incr} repetitions, each from its own pair of full "
          "backups, the first incremental alternating (see Method). Bytes stored: what "
          "walvault's `packs/` and `backups/` grew by (new packs, their indexes, the "
          "manifest); the pgBackRest incremental's own directory.", ""]
    L += compare_table(runs, [("walvault", "backup-incr", "walvault"),
                              ("pgBackRest", "backup-incr", "pgbackrest")])
    L += [""]

    L += ["## Incremental bytes against the ideal", "",
          "The ideal page-granular incremental of each repetition: the 8 KiB pages of the "
          "relation files (base/, global/, pg_tblspc/) whose content changed between the "
          "repetition's full backups and its incrementals, by comparing every page before and "
          "after the load (bench/pages.py; files new since count whole). \"Ideal\" is `lz4 -1` "
          "of those pages concatenated; \"page by page\" compresses each alone and sums the "
          "compressed blocks (lz4's frame header and checksum left out). Pages of other files "
          "(pg_xact, pg_multixact, ...) that changed are shown apart and are not in the ideal.",
          ""]
    L += ["| repetition (first incremental) | relation pages changed | share of pages | "
          "changed, raw (MiB) | ideal: lz4 concatenated (MiB) | lz4 page by page (MiB) | "
          "other files: blocks changed (KiB) | walvault (MiB) | walvault / ideal | "
          "pgBackRest (MiB) | pgBackRest / ideal |", "|---" * 11 + "|"]
    cols = {k: [] for k in ("pages", "share", "raw", "ideal", "page", "other", "wv", "wvr",
                            "pg", "pgr")}
    for n, i, w, p in incr_reps(runs, ideal):
        ib = i.get("ideal_lz4_concat_bytes") if i else None
        row = {
            "pages": i["relation"]["pages_changed"] if i else None,
            "share": i.get("relation_share_changed") if i else None,
            "raw": i["relation"]["bytes_changed"] if i else None,
            "ideal": ib,
            "page": i.get("ideal_lz4_per_page_bytes") if i else None,
            "other": i["other"]["bytes_changed"] if i else None,
            "wv": w.get("bytes_stored") if w else None,
            "pg": p.get("bytes_stored") if p else None,
        }
        row["wvr"] = row["wv"] / ib if ib and row["wv"] is not None else None
        row["pgr"] = row["pg"] / ib if ib and row["pg"] is not None else None
        for k, v in row.items():
            if v is not None:
                cols[k].append(v)
        first = TOOL_NAMES.get(i.get("first"), "?") if i else "?"
        L += [f"| {n} ({first}) | {count0(row['pages'])} of "
              f"{count0(i['relation']['pages'] if i else None)} | {pct(row['share'])} | {mib(row['raw'])} | "
              f"{mib(row['ideal'])} | {mib(row['page'])} | "
              f"{kib0(row['other'])} | "
              f"{mib(row['wv'])} | {fmt(row['wvr'], 'ratio')} | {mib(row['pg'])} | "
              f"{fmt(row['pgr'], 'ratio')} |"]
    med = {k: (statistics.median(v) if v else None) for k, v in cols.items()}
    L += [f"| **median** | {count0(med['pages'])} | "
          f"{pct(med['share'])} | {mib(med['raw'])} | {mib(med['ideal'])} | {mib(med['page'])} | "
          f"{kib0(med['other'])} | "
          f"{mib(med['wv'])} | {fmt(med['wvr'], 'ratio')} | {mib(med['pg'])} | "
          f"{fmt(med['pgr'], 'ratio')} |"]
    L += [""]

    L += ["walvault's own account of the same incrementals (`list --json`) next to the ideal, "
          "and whether each incremental's parent is the full of its repetition:", ""]
    L += ["| repetition | walvault: parent as expected | list: stored (MiB) | repository grew "
          "by (MiB) | list: new, raw (MiB) | ideal: changed, raw (MiB) | list: new share | "
          "ideal: share of pages changed | pgBackRest: parent as expected |",
          "|---" * 9 + "|"]
    for n, i, w, p in incr_reps(runs, ideal):
        L += [f"| {n} | {yes_no(parent_ok(w))} | {mib(w.get('list_stored_bytes') if w else None)} "
              f"| {mib(w.get('bytes_stored') if w else None)} | "
              f"{mib(w.get('list_new_bytes') if w else None)} | "
              f"{mib(i['relation']['bytes_changed'] if i else None)} | "
              f"{pct(w.get('list_new_share') if w else None)} | "
              f"{pct(i.get('relation_share_changed') if i else None)} | {yes_no(parent_ok(p))} |"]
    L += [""]

    L += ["## Manifest size", "",
          "The sealed manifest object of each walvault backup (`nodes/default/backups/<id>`) "
          "against the database at the time (data directory without pg_wal).", ""]
    L += ["| backups | count | manifest (KiB): median (min–max) | database (MiB) | "
          "share of the database: median (max) |", "|---|---|---|---|---|"]
    recs = manifest_records(runs)
    for label, op in MANIFEST_GROUPS:
        g = [r for r in recs if r["op"] == op]
        if not g:
            continue
        kib = summarize([r["manifest_bytes"] / KIB for r in g])
        share = summarize([r["manifest_bytes"] / r["db_bytes"] for r in g])
        db = statistics.median([r["db_bytes"] for r in g])
        L += [f"| {label} | {len(g)} | {kib[0]:.1f} ({kib[1]:.1f}–{kib[2]:.1f}) | "
              f"{db / MIB:.0f} | {pct(share[0], 3)} ({pct(share[2], 3)}) |"]
    L += [""]

    n_chain = meta["runs"].get("chain_length", 10)
    L += [f"## Restore of the {n_chain}th incremental in a row", "",
          f"After a full backup, {n_chain} times: {INCR_LOAD}, `CHECKPOINT`, walvault "
          "`backup --incremental --source local --jobs 2` (each one's parent the one before). "
          "Then a full backup at the same point (nothing written in between), and walvault "
          f"`restore --backup ID --to DIR --jobs 2` of the {n_chain}th incremental and of that "
          "full, alternating, each into a new directory deleted afterwards; only the restore "
          "command is timed.", ""]
    L += ["| backup | wall time (s) | CPU user+sys (s) | peak RSS (MiB) | stored (MiB) | "
          "manifest (KiB) | manifest / database | list: new share | parent as expected |",
          "|---|---|---|---|---|---|---|---|---|"]
    chain = sorted([r for r in runs if r["tool"] == "walvault" and r["op"] in
                    ("chain-base", "chain-incr", "chain-full")],
                   key=lambda r: r["seq"])
    for r in chain:
        name = {"chain-base": "full (start)", "chain-full": "full (end, same data)"}.get(
            r["op"], f"incremental {r['run']}")
        if not r["ok"]:
            L += [f"| {name} | failed (exit status {r['status']}) | | | | | | | |"]
            continue
        share = r["manifest_bytes"] / r["db_bytes"] if r.get("db_bytes") else None
        L += [f"| {name} | {fmt(r['wall_s'], 'wall_s')} | {fmt(r.get('cpu_s'), 'cpu_s')} | "
              f"{r['rss_peak_kib'] / 1024:.1f} | {mib(r.get('bytes_stored'))} | "
              f"{r.get('manifest_bytes', 0) / KIB:.1f} | {pct(share, 3)} | "
              f"{pct(r.get('list_new_share'))} | "
              f"{yes_no(parent_ok(r)) if r['op'] == 'chain-incr' else '—'} |"]
    L += [""]
    L += compare_table(runs, [(f"restore of the {n_chain}th incremental", "restore-incr10",
                               "walvault"),
                              ("restore of the full", "restore-full10", "walvault")])
    L += [""]
    return L


def markdown(meta, runs, checks, ideal, args, stream):
    db = meta["db_bytes_without_wal"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = [r for r in runs if not r["ok"]]
    L = []
    L += ["# walvault benchmark results", ""]
    L += [f"Written by `bench/run.sh {meta['scale']}` on {now}; the script rewrites this file "
          "and `bench/results.json` (every run's raw numbers) on each run. Absolute times drift "
          "on shared machines: quote the ratios.", ""]
    L += ["| | |", "|---|---|"]
    L += [f"| machine | {meta['nproc']} CPUs ({meta['cpu_model']}), "
          f"{meta['mem_total_kib'] / MIB:.1f} GiB memory, Linux {meta['kernel']}, "
          f"{meta['filesystem']} |"]
    L += [f"| database | pgbench scale {meta['scale']}: {db / MIB:.0f} MiB data directory without "
          f"pg_wal ({meta['db_bytes_pg_database_size'] / MIB:.0f} MiB by pg_database_size), "
          "initdb --data-checksums |"]
    L += [f"| versions | {meta['walvault_version']} (git {args.git_rev}), "
          f"{meta['pgbackrest_version']}, {meta['postgres_version']} |"]
    if args.elapsed is not None:
        L += [f"| duration of the whole run | {args.elapsed // 60} min {args.elapsed % 60} s |"]
    overhead = group(runs, "overhead", "true").summary(lambda r: r["wall_s"])
    if overhead:
        L += [f"| timing overhead per run | {overhead[0] * 1000:.1f} ms (median of timing "
              "`/bin/true` the same way; included in every wall time) |"]
    L += [f"| walvault restore check | {checks['restore-check']} |"]
    L += [f"| walvault check of the 10th incremental | {checks['chain-check']} |"]
    L += [f"| S3 check | {checks['s3-check']} |"]
    if args.load_start or args.load_end:
        L += [f"| load average (1, 5, 15 min) at the start / end of the run | "
              f"{args.load_start or '?'} / {args.load_end or '?'} (other work on the machine "
              "shows here; each run's 1-minute figure is in results.json as "
              "`loadavg1_start`) |"]
    if args.bench_status:
        L += [f"| **incomplete** | bench.sh exited with status {args.bench_status}; "
              "only the runs below were measured |"]
    L += [""]

    L += ["## Targets", "", "| target | measured (medians) | verdict |", "|---|---|---|"]
    for text, measured, verdict in (targets(runs) + incremental_targets(runs, ideal)
                                    + s3_targets(runs) + report_stream.targets(stream)):
        L += [f"| {text} | {measured} | {verdict} |"]
    L += [""]

    for title, op, tools, desc in SECTIONS:
        L += [f"## {title}", "", desc, ""]
        L += section_table(runs, op, tools)
        L += [""]

    L += incremental_sections(runs, ideal, meta)
    L += s3_section(runs, meta, checks)
    L += report_stream.section(stream)

    L += ["## Raw limits of this machine", "",
          "The same database, read and written by the simplest tools: what a backup or a "
          "restore could approach.", ""]
    L += raw_table(runs)
    L += [""]

    if failed:
        L += ["## Failed runs", "", "Left out of every median above.", ""]
        for r in failed:
            L += [f"- {r['op']} {r['tool']} run {r['run']}: exit status {r['status']}"
                  f"{' (timed out)' if r.get('timed_out') else ''}: `{' '.join(r['cmd'])}`"]
            tail_lines = [x for x in r.get("stderr_tail", "").splitlines() if x.strip()][-3:]
            for line in tail_lines:
                L += [f"  > {line}"]
        L += [""]

    messages = {}
    for r in runs:
        if r["ok"] and r["tool"] != "true":
            for line in r.get("stderr_tail", "").splitlines():
                if line.strip():
                    messages.setdefault((r["op"], r["tool"]), {}).setdefault(line.strip(), 0)
                    messages[(r["op"], r["tool"])][line.strip()] += 1
    if messages:
        L += ["## Messages on stderr from successful runs", "",
              "Distinct lines (up to 5 per operation and tool; last 20 lines of each run).", ""]
        for (op, tool), lines in sorted(messages.items()):
            L += [f"- {op}, {TOOL_NAMES.get(tool, tool)}:"]
            for line, count in list(lines.items())[:5]:
                L += [f"  - `{line[:300]}` ({count} of the runs)"]
        L += [""]

    runs_meta = meta["runs"]
    L += ["## Method", ""]
    L += [
        f"- One PostgreSQL 15 cluster (`initdb --data-checksums`, listening on 127.0.0.1 and a "
        f"socket in the temporary directory), `pgbench -i -s {meta['scale']} -q`, then "
        "`CHECKPOINT`. Both repositories are directories on the same disk as the cluster; "
        "every file lives in the page cache (the machine's memory is far larger than the "
        "database), so these are CPU and fsync figures, not disk-read figures.",
        "- `archive_command` runs `walvault wal-push %p` and `pgbackrest archive-push %p`, so "
        "both tools have every segment. Before each timed backup the order is switched so that "
        "the tool being timed pushes first, and each waits only for its own copy of the "
        "backup's last segment. The raw `pg_basebackup -X none` runs make the server wait for "
        "the whole command (walvault's push, then pgBackRest's), polled once a second, before "
        "they end, as any `-X none` base backup waits for archiving; hence the `-X fetch` "
        "runs, which do not wait, as a second and stricter yardstick.",
        "- pgBackRest (its config file passed with `--config`): `compress-type=lz4`, "
        "`compress-level=1`, `repo1-cipher-type=aes-256-cbc` with a passphrase, "
        "`process-max=2`, `repo1-type=posix`, `start-fast=y`, `archive-check=y`, "
        "`repo1-retention-full=99` (so that no backup expires during the run); "
        "`stanza-create` once. walvault: `--jobs 2`, its default lz4 and "
        "XChaCha20-Poly1305 sealing.",
        f"- Full backups: {runs_meta['backup']} rounds; each round takes a walvault local, a "
        "pgBackRest, a walvault stream and two raw `pg_basebackup` backups, and the round's "
        "first tool alternates. Restores: "
        f"{runs_meta['restore']} each, alternating, each into a new directory deleted "
        "afterwards. Raw read and write: "
        f"{runs_meta['raw']} each (the read after one untimed warm-up pass). `sync` runs before "
        "every timed command so that no earlier writes are flushed on its time.",
        f"- WAL push ({runs_meta['wal_push']} each, alternating): rows are written until "
        "several segments are full of real WAL (md5 text rows, so compression has real work); "
        "the full segments are copied out of `pg_wal` into a directory of their own (no "
        "`archive_status` beside them, so neither tool looks for more ready files) and each "
        "copy is pushed by hand, once by each tool, into a destination that has never seen it: "
        "node `walpush` of the walvault repository and stanza `walpush` of the pgBackRest "
        "repository (same cluster). One untimed push to each comes first, so that binding the "
        "new node and reading the stanza's info files for the first time do not count. Timing "
        "pushes outside PostgreSQL keeps the other tool and the archiver's pace out of them.",
        "- Wall time: a monotonic clock around the command. CPU: user+sys from `/usr/bin/time "
        "-f`, which includes every child process waited for.",
        "- Peak RSS, the same method for every tool: every 50 ms the process tree under "
        "`/usr/bin/time` is listed from `/proc`, and each process's `VmHWM` (the kernel's "
        "peak-RSS counter) is noted; the run's figure is the sum over all its processes "
        "(pgBackRest's main process and its workers; walvault's single process with its "
        "threads), or `/usr/bin/time`'s `%M` (the largest single process) when that is "
        "larger. Shared library pages count once per process, as RSS always does. The "
        "largest simultaneous sum is in results.json as `rss_concurrent_peak_kib`.",
        "- Bytes stored: for a walvault backup, what `nodes/default/packs` and "
        "`nodes/default/backups` grew by (`du -sb` before and after; packs are shared between "
        "backups, so there is no per-backup directory); for pgBackRest, `du -sb` of the "
        "backup's own directory `backup/bench/<label>`. For WAL pushes, what each tool's WAL "
        "directory grew by.",
        "- Throughput: the data directory size without `pg_wal` (what both tools copy) divided "
        "by wall time, in MB/s (10^6 bytes); for WAL pushes the segment size. The dd write is "
        "that size rounded up to whole MiB.",
        "- Reading the data directory: `tar cf - --exclude=./pg_wal -C PGDATA . | cat > "
        "/dev/null` (through a pipe: GNU tar skips reading entirely when its archive is "
        "/dev/null).",
        "- After the timed runs, walvault's newest backup is restored once more (untimed), "
        "started with `archive_mode = off` (it fetches its WAL with `wal-fetch`) and "
        "`pgbench_accounts` counted: the \"restore check\" above.",
        "- Incremental backups come after all of the above, on the same cluster: the rows the "
        "WAL-push runs wrote are dropped first, and autovacuum is turned off (`ALTER SYSTEM`, "
        "reload), so that a vacuum landing between the ideal's two snapshots and an "
        "incremental, or between the two tools' incrementals, cannot give them different "
        f"changes. The load is {INCR_LOAD} as pgbench runs it by default (it vacuums "
        "pgbench_branches and pgbench_tellers and truncates pgbench_history first); after it, "
        "`CHECKPOINT`, and a WAL switch waited for until archived, so that neither timed "
        "incremental waits for the load's WAL.",
        f"- Incremental against pgBackRest ({runs_meta.get('incremental', 0)} repetitions): "
        "per repetition a walvault full (`--source local`), a pgBackRest full, `CHECKPOINT`, "
        "page fingerprints, the load, `CHECKPOINT`, fingerprints again, then the two "
        "incrementals, walvault's first in odd repetitions and pgBackRest's first in even "
        "ones, each with the archive order switched to it as for full backups. The fulls are "
        "timed as well (`incr-parent` in results.json) but not reported here. walvault's "
        "incremental takes the newest backup of the node as its parent and pgBackRest's the "
        "newest backup of the stanza: both the full of the same repetition, which the report "
        "checks (\"parent as expected\").",
        "- The ideal: bench/pages.py notes a BLAKE2b-128 fingerprint of every 8 KiB page of "
        "every file a backup copies (the same exclusions as walvault: pg_wal, pg_stat_tmp, "
        "pg_replslot, pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_subtrans, pgsql_tmp, "
        "pg_internal.init, postmaster.pid and the like) on the idle, checkpointed server after "
        "the two fulls, and compares after the load: a page whose fingerprint differs, a page "
        "past the file's earlier end, and every page of a new file count as changed. "
        "Fingerprints in place of a copy of the data directory: the same page-by-page answer "
        "without writing a gigabyte twice per repetition. Relation files are everything under "
        "base/, global/ (pg_control included) and pg_tblspc/; the changed pages of those are "
        "written out and compressed with the `lz4` command at level 1, concatenated (the "
        "ideal) and each alone.",
        f"- The chain: a walvault full, then {runs_meta.get('chain_length', 10)} times the "
        "load, `CHECKPOINT`, a waited-for WAL switch and a timed walvault incremental; then a "
        "walvault full with nothing written since, and "
        f"{runs_meta.get('chain_restore', 0)} restores each of the last incremental and of "
        "that full (`--backup ID`), alternating. Then the last incremental is restored once "
        "more (untimed), started with `archive_mode = off`, and the md5 of the ordered rows of "
        "all four pgbench tables compared with the source's: \"check of the 10th "
        "incremental\" above.",
        "- Manifest size: `stat` of the sealed object `nodes/default/backups/<id>` right after "
        "the backup; the database size beside it is the data directory without pg_wal, "
        "measured at the same moment (`du -sb`).",
        "- S3 comes last (its method is in its own section): `wv_s3_start` starts s3rver and "
        "the proxy, and `archive_command` is switched to the two new repositories. The S3 "
        "check: every timed put compared byte for byte with the source in s3rver's directory; "
        "the object walvault's backend gets compared with the source once, untimed; and the "
        "newest backup on s3:// restored once more (untimed), started with `archive_mode = "
        "off` (its `restore_command` fetches WAL from s3rver) and `pgbench_accounts` counted.",
    ]
    L += [""]
    return "\n".join(L)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--in", dest="indir", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--elapsed", type=int)
    parser.add_argument("--git-rev", default="unknown")
    parser.add_argument("--bench-status", type=int, default=0)
    parser.add_argument("--load-start", default="")
    parser.add_argument("--load-end", default="")
    args = parser.parse_args()

    meta, runs, checks, ideal = load(args.indir)
    stream = report_stream.load(args.indir)
    results = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": args.elapsed,
        "git_rev": args.git_rev,
        "bench_status": args.bench_status,
        "meta": meta,
        "restore_check": checks["restore-check"],
        "chain_check": checks["chain-check"],
        "s3_check": checks["s3-check"],
        "loadavg_start": args.load_start,
        "loadavg_end": args.load_end,
        "ideal_incremental": [ideal[n] for n in sorted(ideal)],
        "runs": runs,
        "stream": stream,
    }
    for path, text in ((args.json, json.dumps(results, indent=1) + "\n"),
                       (args.markdown, markdown(meta, runs, checks, ideal, args, stream))):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    failed = [r for r in runs if not r["ok"]]
    if failed:
        print(f"report.py: {len(failed)} run(s) failed; see 'Failed runs' in {args.markdown}",
              file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
