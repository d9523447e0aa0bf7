#!/usr/bin/env python3
"""The ideal page-granular incremental: which 8 KiB pages of a data directory changed.

    pages.py snapshot --pgdata DIR --out SNAP.json
    pages.py diff --pgdata DIR --before SNAP.json --work DIR --out RESULT.json

`snapshot` notes a fingerprint (BLAKE2b, 16 bytes) of every 8 KiB page of every file that a
backup copies, reading the files in place: on an idle, checkpointed server that is a
consistent page-level picture without copying a gigabyte. `diff` reads the files again and
compares page by page, file by file: a page whose fingerprint differs, a page beyond the
file's earlier end, and every page of a file the snapshot did not have count as changed
(pages cut off by a truncation need no storing and do not count). A file's last partial
page counts as a page of its own length.

Files are split in two groups:
- "relation": everything under base/, global/ and pg_tblspc/ (tablespaces followed through
  their links): the relation files, plus pg_control, pg_filenode.map and PG_VERSION files.
  This is the ideal the targets use.
- "other": the rest of what a backup copies (pg_xact, pg_multixact, configuration files...),
  reported alongside and never added to the ideal.
Left out, as walvault and pgBackRest leave them out: pg_wal, pg_stat_tmp, pg_replslot,
pg_dynshmem, pg_notify, pg_serial, pg_snapshots, pg_subtrans, pgsql_tmp*, pg_internal.init,
postmaster.pid/.opts, backup_label, tablespace_map and recovery/standby signal files.

The changed pages of the relation group are written one after another to one file and
compressed with `lz4 -1` (the CLI): that size is "the ideal". Each page is also compressed
alone (`lz4 -1 -m` over one file per page) and the compressed block sizes are summed, the
lz4 frame's own header, end mark and checksum (19 bytes per page) left out: what a store
that compresses page by page could reach.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

PAGE = 8192
READ_CHUNK = 128 * PAGE
RELATION_DIRS = ("base", "global", "pg_tblspc")
EXCLUDED_DIR_CONTENTS = {"pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify",
                         "pg_serial", "pg_snapshots", "pg_subtrans"}
EXCLUDED_TOP_FILES = {"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map",
                      "postgresql.auto.conf.tmp", "current_logfiles.tmp", "recovery.signal",
                      "standby.signal"}


def excluded(rel, name):
    if name.startswith("pgsql_tmp") or name == "pg_internal.init":
        return True
    return "/" not in rel and name in EXCLUDED_TOP_FILES


def walk(pgdata):
    """Yield (relative path, absolute path) of every regular file a backup copies."""
    todo = [("", pgdata)]
    while todo:
        rel_dir, abs_dir = todo.pop()
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except FileNotFoundError:
            continue  # dropped while we walked (the server should be idle: see bench.sh)
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if excluded(rel, e.name):
                continue
            # Tablespaces are links under pg_tblspc: follow those, and only those.
            follow = rel_dir == "pg_tblspc"
            if e.is_dir(follow_symlinks=follow):
                if rel not in EXCLUDED_DIR_CONTENTS:
                    todo.append((rel, e.path))
            elif e.is_file(follow_symlinks=False):
                yield rel, e.path


def group_of(rel):
    return "relation" if rel.split("/", 1)[0] in RELATION_DIRS else "other"


def pages_of(path):
    """Yield each page of the file (the last one may be short)."""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                return
            for off in range(0, len(chunk), PAGE):
                yield chunk[off:off + PAGE]


def fingerprint(page):
    return hashlib.blake2b(page, digest_size=16).digest()


def command_snapshot(args):
    files = {}
    for rel, path in walk(args.pgdata):
        try:
            files[rel] = b"".join(fingerprint(p) for p in pages_of(path)).hex()
        except FileNotFoundError:
            continue
    with open(args.out, "w") as f:
        json.dump({"pgdata": args.pgdata, "files": files}, f)


def lz4_size(path):
    subprocess.run(["lz4", "-1", "-q", "-f", path, path + ".lz4"], check=True)
    return os.path.getsize(path + ".lz4")


def lz4_blocks_size(frame):
    """Bytes of an lz4 frame's data blocks, without the frame's header, sizes and checksums."""
    flg = frame[4]
    pos = 7 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0)
    block_checksum = 4 if flg & 0x10 else 0
    total = 0
    while True:
        size = int.from_bytes(frame[pos:pos + 4], "little")
        pos += 4
        if size == 0:
            return total
        size &= 0x7FFFFFFF
        total += size
        pos += size + block_checksum


def per_page_lz4(page_dir, names):
    """Compress each file in page_dir alone; the sum of their lz4 block bytes."""
    total = 0
    for i in range(0, len(names), 500):
        batch = names[i:i + 500]
        subprocess.run(["lz4", "-1", "-q", "-f", "-m"] + batch, cwd=page_dir, check=True)
        for name in batch:
            with open(os.path.join(page_dir, name + ".lz4"), "rb") as f:
                total += lz4_blocks_size(f.read())
    return total


def command_diff(args):
    with open(args.before) as f:
        before = json.load(f)["files"]
    os.makedirs(args.work, exist_ok=True)
    page_dir = os.path.join(args.work, "pages")
    os.makedirs(page_dir, exist_ok=True)
    concat_path = os.path.join(args.work, "changed-pages")
    groups = {g: {"files": 0, "pages": 0, "bytes": 0, "files_new": 0, "files_changed": 0,
                  "pages_changed": 0, "bytes_changed": 0} for g in ("relation", "other")}
    names = []
    by_dir = {}  # relation group: changed pages per top directory and database
    with open(concat_path, "wb") as concat:
        for rel, path in walk(args.pgdata):
            g = groups[group_of(rel)]
            old = bytes.fromhex(before.get(rel, ""))
            is_new = rel not in before
            changed_here = 0
            try:
                for i, page in enumerate(pages_of(path)):
                    g["pages"] += 1
                    g["bytes"] += len(page)
                    if not is_new and old[i * 16:(i + 1) * 16] == fingerprint(page):
                        continue
                    changed_here += 1
                    g["pages_changed"] += 1
                    g["bytes_changed"] += len(page)
                    if group_of(rel) == "relation":
                        concat.write(page)
                        name = f"{len(names):07d}"
                        with open(os.path.join(page_dir, name), "wb") as p:
                            p.write(page)
                        names.append(name)
            except FileNotFoundError:
                continue
            g["files"] += 1
            if is_new:
                g["files_new"] += 1
            elif changed_here:
                g["files_changed"] += 1
            if changed_here and group_of(rel) == "relation":
                key = "/".join(rel.split("/")[:2]) if rel.startswith("base/") else rel.split("/")[0]
                by_dir[key] = by_dir.get(key, 0) + changed_here
    rel_g = groups["relation"]
    result = {
        "page_size": PAGE,
        "relation": rel_g,
        "other": groups["other"],
        "relation_changed_pages_by_dir": by_dir,
        "relation_share_changed": rel_g["pages_changed"] / rel_g["pages"] if rel_g["pages"] else None,
        "ideal_lz4_concat_bytes": lz4_size(concat_path) if rel_g["pages_changed"] else 0,
        "ideal_lz4_per_page_bytes": per_page_lz4(page_dir, names) if names else 0,
        "tool": subprocess.run(["lz4", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    shutil.rmtree(args.work)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot")
    snap.add_argument("--pgdata", required=True)
    snap.add_argument("--out", required=True)
    diff = sub.add_parser("diff")
    diff.add_argument("--pgdata", required=True)
    diff.add_argument("--before", required=True)
    diff.add_argument("--work", required=True)
    diff.add_argument("--out", required=True)
    args = parser.parse_args()
    if shutil.which("lz4") is None and args.command == "diff":
        sys.exit("pages.py: the lz4 command is missing (Debian package lz4)")
    if args.command == "snapshot":
        command_snapshot(args)
    else:
        command_diff(args)


if __name__ == "__main__":
    main()
