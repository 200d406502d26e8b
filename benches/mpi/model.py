#!/usr/bin/env python3
"""SCALING.md's model: predicted data-parallel efficiency of the bundled specs.

Per step with the global batch fixed (the spec's batch_size): K processes each compute
1/K of it, then sum the gradients with a ring allreduce:
    T_K = T_c / K + 2 (K-1)/K * bytes / bandwidth + 2 (K-1) * latency * buckets
efficiency = T_c / (K * T_K). T_c (one thread, the spec's batch) comes from
`kiln bench --json` (benches/mpi/bench.txt lines: NAME BATCH JSON), the parameter
counts from `kiln summary` (params.txt: NAME COUNT).
"""
import json
import math
import sys

BUCKET = 1 << 16  # values per allreduce (src/dist/mod.rs)
LINKS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8}
LATENCY = float(sys.argv[3]) if len(sys.argv) > 3 else 15e-6  # s per ring step


def main(bench, params):
    tc = {}
    for line in open(bench):
        name, batch, js = line.split(" ", 2)
        tc[name] = (int(batch), json.loads(js)["train_step_ms"] / 1e3)
    p = {}
    for line in open(params):
        name, count = line.split()
        p[name] = int(count.replace(",", ""))
    ks = [2, 4, 8, 16, 64]
    print("| spec | params | batch | step (1 thread) | " + " | ".join(
        f"{link} K={k}" for link in LINKS for k in ks) + " |")
    print("|---" * (4 + len(ks) * len(LINKS)) + "|")
    rows = []
    for name in tc:
        batch, t = tc[name]
        size = 4 * p[name]
        buckets = math.ceil(p[name] / BUCKET)
        row = []
        for bw in LINKS.values():
            for k in ks:
                ar = 2 * (k - 1) / k * size / bw + 2 * (k - 1) * LATENCY * buckets
                # A process computes at least one example.
                tk = t * max(1, batch // k) / batch + ar
                row.append(f"{t / (k * tk):.0%}" if k <= batch else "—")
        key = t / (8 * (t / 8 + 2 * 7 / 8 * size / LINKS["10 Gb/s"] + 14 * LATENCY * buckets))
        rows.append((-key, f"| {name} | {p[name]:,} | {batch} | {t * 1e3:.3g} ms | " + " | ".join(row) + " |"))
    for _, r in sorted(rows):
        print(r)


main(sys.argv[1], sys.argv[2])
