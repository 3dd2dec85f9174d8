"""Sampling a large log: `python -m benchmarks.sampling [--rows 12.5e6 25e6 50e6] [--out DIR]`.

1. A synthetic log shaped like Music4All-Onion's listening events: 119,140 users (LFM-2b-like
   integer ids) with Zipf-like activity (rank^-0.6), 56,512 tracks with 16-character text ids
   and Zipf-like popularity (rank^-0.9), times uniform over 2005-01-01 .. 2020-03-20, rows in
   random order. Written under --data-dir as Parquet files of --chunk-rows rows (pyarrow's
   defaults: snappy, row groups of 1 Mi rows), one chunk in memory at a time, and kept for
   the next run (spec.json says what the folder holds). An input of N rows is a folder of
   links to the first N / chunk-rows files.
2. The whole command `python -m recsys_core.data sample INPUT --out OUT --user-col user_id
   --item-col track_id --fraction F --min-events 10 --last 500` for each size and fraction, as
   a subprocess (start-up included, files in the page cache): median wall time of --repeats,
   CPU seconds, peak RSS (ru_maxrss of that process, from os.wait4), the output's size and the
   manifest's rows, users, items and pass times. Once more on the first --tsv-rows rows as TSV
   files in Music4All-Onion's format (header `user_id<TAB>track_id<TAB>timestamp`, times
   `2019-02-20 10:37:17`), the format its 253M-event file comes in; and once with fraction 1 on
   the largest input (every user kept: pass 2 spills ranges of --partition-rows events to disk).
Writes sampling.md and sampling.csv under --out (default results/benchmarks), naming the
machine and its load (other work on it shows as a load average above 0).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from benchmarks.report import write

REPO = Path(__file__).resolve().parents[1]
SPEC = {"users": 119_140, "tracks": 56_512, "user_zipf": 0.6, "track_zipf": 0.9,
        "start": "2005-01-01", "end": "2020-03-20", "seed": 0}
OPTIONS = {"--user-col": "user_id", "--item-col": "track_id", "--min-events": "10",
           "--last": "500"}
GOALS = {"rows_per_s": 10e6, "peak_rss_mib": 2048}


def zipf_cdf(n: int, s: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -s
    return np.cumsum(weights) / weights.sum()


def generate(folder: Path, rows: int, chunk_rows: int) -> list[Path]:
    """The log's files, written unless `folder` already holds them for this spec."""
    files = [folder / f"part-{k:04d}.parquet" for k in range(math.ceil(rows / chunk_rows))]
    spec = {**SPEC, "rows": rows, "chunk_rows": chunk_rows}
    marker = folder / "spec.json"
    if (marker.exists() and json.loads(marker.read_text()) == spec
            and all(f.exists() for f in files)):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    rng = np.random.default_rng(SPEC["seed"])
    users = rng.permutation(np.arange(SPEC["users"]) * 37 + 1_000)
    alphabet = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                             np.uint8)
    tracks = pa.array(rng.choice(alphabet, (SPEC["tracks"], 16)).view("S16").ravel().astype(str))
    user_cdf, track_cdf = zipf_cdf(SPEC["users"], SPEC["user_zipf"]), zipf_cdf(SPEC["tracks"],
                                                                                 SPEC["track_zipf"])
    t0, t1 = (int(np.datetime64(SPEC[k], "s").astype(np.int64)) for k in ("start", "end"))
    for k, path in enumerate(files):
        n = min(chunk_rows, rows - k * chunk_rows)
        track = np.searchsorted(track_cdf, rng.random(n)).astype(np.int32)
        table = pa.table({
            "user_id": users[np.searchsorted(user_cdf, rng.random(n))],
            "track_id": pa.DictionaryArray.from_arrays(track, tracks).cast(pa.string()),
            "timestamp": pa.array(rng.integers(t0, t1, n).astype("datetime64[s]")),
        })
        pq.write_table(table, path)
    marker.write_text(json.dumps(spec))
    return files


def input_of(files: list[Path], rows: int, chunk_rows: int, folder: Path) -> Path:
    """A folder of links to the files holding the first `rows` rows."""
    target = folder / f"input-{rows}"
    target.mkdir(exist_ok=True)
    for f in files[:math.ceil(rows / chunk_rows)]:
        if not (target / f.name).exists():
            (target / f.name).symlink_to(f)
    return target


def tsv_of(files: list[Path], rows: int, chunk_rows: int, folder: Path) -> Path:
    """The first `rows` rows as TSV files in Music4All-Onion's format."""
    target = folder / f"tsv-{rows}"
    target.mkdir(exist_ok=True)
    for f in files[:math.ceil(rows / chunk_rows)]:
        out = target / f.with_suffix(".tsv").name
        if out.exists():
            continue
        table = pq.read_table(f)
        table = table.set_column(2, "timestamp", table["timestamp"].cast(pa.timestamp("s")))
        with open(out.with_suffix(".part"), "wb") as fh:
            fh.write(b"user_id\ttrack_id\ttimestamp\n")
            pcsv.write_csv(table, fh, pcsv.WriteOptions(include_header=False, delimiter="\t",
                                                        quoting_style="none"))
        out.with_suffix(".part").rename(out)
    return target


def measure(src: Path, out: Path, fraction: float) -> dict:
    """One run of the command: wall and CPU seconds, peak RSS, the manifest."""
    args = [sys.executable, "-m", "recsys_core.data", "sample", str(src), "--out", str(out),
            "--fraction", str(fraction), *[x for kv in OPTIONS.items() for x in kv]]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"sample failed: {err[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024,
            "manifest": json.loads(Path(str(out) + ".json").read_text())}


def machine() -> str:
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in
                    Path("/etc/os-release").read_text().splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))) / 2**20
    return (f"{platform.node()}: {os_name}, {os.cpu_count()} cores, {mem:.0f} GiB, "
            f"Python {platform.python_version()}, pyarrow {pa.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sampling")
    p.add_argument("--rows", type=float, nargs="+", default=[12.5e6, 25e6, 50e6])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05])
    p.add_argument("--chunk-rows", type=int, default=3_125_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tsv-rows", type=float, default=12.5e6, help="0: no TSV run")
    p.add_argument("--no-keep-all", dest="keep_all", action="store_false",
                   help="no run with fraction 1")
    p.add_argument("--data-dir", type=Path, default=Path("/tmp/recsys-sampling-bench"))
    p.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    args = p.parse_args(argv)
    sizes = sorted({int(r) for r in args.rows})
    start = time.perf_counter()
    files = generate(args.data_dir / "log", sizes[-1], args.chunk_rows)
    generate_s = time.perf_counter() - start
    runs = [(input_of(files, size, args.chunk_rows, args.data_dir), "Parquet", fraction)
            for size in sizes for fraction in args.fractions]
    if args.tsv_rows:
        runs.append((tsv_of(files, int(args.tsv_rows), args.chunk_rows, args.data_dir), "TSV",
                     max(args.fractions)))
    if args.keep_all:
        runs.append((input_of(files, sizes[-1], args.chunk_rows, args.data_dir), "Parquet", 1.0))
    load_before, rows = os.getloadavg(), []
    for src, fmt, fraction in runs:
        out = args.data_dir / f"sample-{src.name}-{fraction}.parquet"
        n = args.repeats if fraction < 1 else 1   # keeping every user takes ~10x longer
        repeats = [measure(src, out, fraction) for _ in range(n)]
        m = repeats[-1]["manifest"]
        wall = statistics.median(r["wall_s"] for r in repeats)
        seconds = {k: statistics.median(r["manifest"]["seconds"][k] for r in repeats)
                   for k in m["seconds"]}
        rows.append({
            "format": fmt, "input_rows": m["rows"]["in"], "input_files": len(m["input"]["files"]),
            "fraction": fraction, "wall_s": wall, "rows_per_s": m["rows"]["in"] / wall,
            "cpu_s": statistics.median(r["cpu_s"] for r in repeats),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in repeats),
            "in_process_s": seconds["total"], "pass1_s": seconds["pass1"],
            "pass2_s": seconds["pass2"], "sort_write_s": seconds["sort_write"],
            "output_rows": m["rows"]["out"],
            "output_users": m["users"]["out"], "output_items": m["items_out"],
            "output_bytes": m["output"]["bytes"], "output_sha256": m["output"]["sha256"],
            "bytes_per_output_row": m["output"]["bytes"] / max(m["rows"]["out"], 1),
            "same_bytes_each_run": len({r["manifest"]["output"]["sha256"] for r in repeats}) == 1,
        })
        print(f"{fmt} {m['rows']['in']:,} rows, fraction {fraction}: {wall:.2f} s, "
              f"{rows[-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    data = pd.DataFrame(rows)
    report(args, data, generate_s, load_before, os.getloadavg())
    return 0


def same_as_parquet(data: pd.DataFrame) -> bool | None:
    pairs = data[data.format == "TSV"].merge(data[data.format == "Parquet"],
                                             on=["input_rows", "fraction"])
    return bool((pairs.output_sha256_x == pairs.output_sha256_y).all()) if len(pairs) else None


def report(args, data: pd.DataFrame, generate_s: float, load_before, load_after) -> None:
    shown = pd.DataFrame({
        "input": data.format, "input rows": data.input_rows.map("{:,}".format),
        "files": data.input_files,
        "fraction": data.fraction, "wall s": data.wall_s.map("{:.2f}".format),
        "M rows/s": (data.rows_per_s / 1e6).map("{:.1f}".format),
        "M rows/s in process": (data.input_rows / data.in_process_s / 1e6).map("{:.1f}".format),
        "CPU s": data.cpu_s.map("{:.1f}".format),
        "peak RSS MiB": data.peak_rss_mib.map("{:,.0f}".format),
        "pass 1 / 2 / sort+write s": [f"{a:.2f} / {b:.2f} / {c:.2f}" for a, b, c in
                                      zip(data.pass1_s, data.pass2_s, data.sort_write_s)],
        "output rows": data.output_rows.map("{:,}".format),
        "users": data.output_users.map("{:,}".format),
        "items": data.output_items.map("{:,}".format),
        "output MB": (data.output_bytes / 1e6).map("{:.1f}".format),
        "bytes/row": data.bytes_per_output_row.map("{:.2f}".format),
    })
    parquet = data[(data.format == "Parquet") & (data.fraction < 1)]
    slowest, peak = parquet.rows_per_s.min(), data.peak_rss_mib.max()
    verdict = (f"Goals: >= {GOALS['rows_per_s'] / 1e6:.0f} M input rows/s: "
               f"{'met' if slowest >= GOALS['rows_per_s'] else 'not met'} (slowest Parquet "
               f"sample {slowest / 1e6:.1f} M/s); <= {GOALS['peak_rss_mib']:,} MiB peak RSS: "
               f"{'met' if peak <= GOALS['peak_rss_mib'] else 'not met'} (largest {peak:,.0f} "
               f"MiB). Output bytes identical in every repeat: "
               f"{bool(data.same_bytes_each_run.all())}"
               f"; from TSV and from Parquet of the same rows: {same_as_parquet(data)}.")
    print(write(
        args.out, "sampling", f"# Sampling benchmark ({time.strftime('%Y-%m-%d')})",
        f"Machine: {machine()}; load average {', '.join(f'{x:.2f}' for x in load_before)} "
        f"before and {', '.join(f'{x:.2f}' for x in load_after)} after (the VM is shared: "
        "other processes' CPU use lowers the rows/s, not the CPU seconds).",
        f"Input: a synthetic Music4All-Onion-shaped log ({SPEC['users']:,} users, "
        f"{SPEC['tracks']:,} tracks, Zipf-like), Parquet files of {args.chunk_rows:,} rows "
        f"(generated in {generate_s:.0f} s, or reused). Command: `python -m recsys_core.data "
        f"sample INPUT --out OUT --fraction F {' '.join(f'{k} {v}' for k, v in OPTIONS.items())}`"
        f", the whole process timed (median of {args.repeats}; 'in process': the manifest's "
        "seconds, without the ~0.4 s start-up of Python, numpy and pyarrow, whose dataset module "
        "imports pandas); pass times: medians; peak RSS: the largest.",
        shown, verdict, data=data), end="")


if __name__ == "__main__":
    sys.exit(main())
