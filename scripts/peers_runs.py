#!/usr/bin/env python3
"""Runs ../shared/bench/peers.py several times at each thread count and prints, per case, the
median of each column and the median speedup with its range over the runs.

The project's machine is shared: the same binary's median time moves by up to ~30% between
consecutive runs, so one peers.py table is one sample. Usage (from the project root, after
`cargo build --release`, with the peers venv of docs/PERFORMANCE.md):

    ../peers-venv/bin/python scripts/peers_runs.py --runs 3 --threads 1 2 \
        --recur target/release/recur [--per-case] [--cases a,b] [--save DIR]
    ../peers-venv/bin/python scripts/peers_runs.py --from DIR [DIR ...]   # summarise saved runs
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = os.path.join(HERE, "..", "..", "shared", "bench", "peers.py")


def table(text):
    """The rows of the markdown table after the `threads=` line: case -> 5 values or None."""
    rows, seen = {}, False
    for line in text.splitlines():
        if line.startswith("threads="):
            seen = True
            continue
        if not seen or not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] == "case" or cells[0].startswith("-"):
            continue
        try:
            rows[cells[0]] = [None if c == "-" else float(c) for c in cells[1:]]
        except ValueError:
            continue
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--recur", help="the recur binary to time (not needed with --from)")
    ap.add_argument("--peers", default=PEERS)
    ap.add_argument("--save", help="directory for each run's raw output")
    ap.add_argument("--cases", default="", help="comma-separated subset of the suite")
    ap.add_argument("--per-case", action="store_true",
                    help="one peers.py call per case, so that recur and the peers of a case are "
                         "timed seconds apart rather than minutes (the machine's speed drifts)")
    ap.add_argument("--from", dest="saved", nargs="+", metavar="DIR",
                    help="summarise the raw outputs earlier runs saved with --save, "
                         "instead of timing anything")
    args = ap.parse_args()
    suite_file = os.path.join(os.path.dirname(os.path.abspath(args.peers)), "suite.json")
    with open(suite_file) as f:
        names = [c["name"] for c in json.load(f)["cases"]]
    if args.saved:
        summarise(from_saved(args.saved, args.threads), args.threads, names)
        return
    if not args.recur:
        ap.error("--recur is required unless --from is given")
    if args.cases:
        want = args.cases.split(",")
        names = [n for n in names if n in want]
    groups = [[n] for n in names] if args.per_case else [names]
    samples = {t: {} for t in args.threads}
    for run in range(args.runs):
        for group in groups:
            for t in args.threads:
                out = subprocess.run(
                    [sys.executable, args.peers, "--threads", str(t), "--recur", args.recur,
                     "--cases", ",".join(group)],
                    capture_output=True, text=True, check=True,
                ).stdout
                if args.save:
                    os.makedirs(args.save, exist_ok=True)
                    tag = group[0] if len(group) == 1 else "all"
                    with open(os.path.join(args.save, f"t{t}_{tag}_run{run + 1}.txt"), "w") as f:
                        f.write(out)
                for case, vals in table(out).items():
                    samples[t].setdefault(case, []).append(vals)
    summarise(samples, args.threads, names)


def from_saved(dirs, threads):
    """The samples of the `t{threads}_*.txt` files that `--save` wrote into `dirs`."""
    samples = {t: {} for t in threads}
    for d in dirs:
        for name in sorted(os.listdir(d)):
            for t in threads:
                if name.startswith(f"t{t}_") and name.endswith(".txt"):
                    with open(os.path.join(d, name)) as f:
                        for case, vals in table(f.read()).items():
                            samples[t].setdefault(case, []).append(vals)
    return samples


def summarise(samples, threads, order):
    """Prints, per thread count and in the suite's `order`, the median of every column and the
    speedup's median and range."""
    fmt = lambda x: "-" if x is None else f"{x:.3f}"
    for t in threads:
        runs = max((len(v) for v in samples[t].values()), default=0)
        print(f"threads={t} (median of {runs} runs; speedup range in brackets)")
        print("| case | torch oneDNN ms | torch native ms | ORT ms | recur ms | speedup vs best peer |")
        print("|---|---|---|---|---|---|")
        for case in sorted(samples[t], key=lambda c: order.index(c) if c in order else len(order)):
            vs = samples[t][case]
            med = []
            for i in range(5):
                xs = [v[i] for v in vs if v[i] is not None]
                med.append(statistics.median(xs) if xs else None)
            r = [v[4] for v in vs if v[4] is not None]
            if not r:
                continue
            print(f"| {case} | {fmt(med[0])} | {fmt(med[1])} | {fmt(med[2])} | {fmt(med[3])} "
                  f"| {statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}] |")
        print()


if __name__ == "__main__":
    main()
