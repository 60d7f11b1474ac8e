"""Where a command's memory goes: its process tree's PSS and USS over time, and the peak.

Runs the command, samples every process of its tree every ``--every`` seconds (psutil's
``memory_full_info``: PSS divides shared pages among their processes, USS is what a process
alone holds), and prints the peak of the summed PSS with each process's share at that
moment, then a timeline. Sampling reads every process's smaps, which costs CPU: use it to
find where memory goes, not to time a run.

    .venv/bin/python benchmarks/memprof.py -- .venv/bin/automl fit train.csv --target y \\
        --time-budget 60 --output /tmp/run

Each process is shown as ``(pid, parent, PSS, USS, RSS)`` in MB; the first is the command.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time

import psutil


def sample(root: psutil.Process) -> list[tuple[int, int, int, int, int]]:
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            mem = proc.memory_full_info()
            rows.append((proc.pid, proc.ppid(), round(mem.pss / 2**20), round(mem.uss / 2**20),
                         round(mem.rss / 2**20)))
        except psutil.Error:
            continue
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--timeline", type=float, default=2.0,
                        help="print the tree every this many seconds (0: not at all)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    t0, wall0 = time.monotonic(), time.time()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    samples = []
    while proc.poll() is None:
        samples.append((time.monotonic() - t0, sample(root)))
        time.sleep(args.every)
    totals = [(t, sum(r[2] for r in rows), rows) for t, rows in samples if rows]
    print(f"exit {proc.returncode}, wall {time.monotonic() - t0:.1f} s, {len(totals)} samples")
    if not totals:
        return proc.returncode
    t, peak, rows = max(totals, key=lambda x: x[1])
    at = datetime.datetime.fromtimestamp(wall0 + t).isoformat(timespec="seconds")
    print(f"peak PSS {peak} MB at {t:.1f} s ({at}): {rows}")
    values = sorted(s for _, s, _ in totals)
    print(f"PSS mean {statistics.mean(values):.0f}, p90 {values[int(0.9 * len(values))]}, "
          f"max {values[-1]} MB")
    last = -float("inf")
    for t, total, rows in totals if args.timeline else ():
        if t - last >= args.timeline:
            print(f"{t:6.1f} s {total:5d} MB  " + " ".join(f"{r[2]}/{r[3]}" for r in rows))
            last = t
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
