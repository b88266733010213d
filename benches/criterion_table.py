#!/usr/bin/env python3
"""Prints a Markdown table of the medians Criterion saved under target/criterion.

    cargo bench --bench io && python3 benches/criterion_table.py > benches/results/criterion.md.new

Rows are the benchmark groups (the rows of `ferrite-io bench`, then `ring_setup`), columns the
backends; each cell is the median time per iteration.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
groups = {}
for estimates in sorted(root.glob("*/*/new/estimates.json")):
    backend, group = estimates.parent.parent.name, estimates.parent.parent.parent.name
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    groups.setdefault(group, {})[backend] = median_ns


# Table order: ours, then the baselines; rows as `ferrite-io bench` prints them. Others follow.
BACKENDS = ["uring", "uring_fixed", "tokio_engine", "raw_ring", "raw_sqpoll", "pread", "nowait",
            "spawn_blocking", "tokio_fs"]
ROWS = ["cached_read_4k", "buffered_write_4k", "batch8_cached_read_4k", "fdatasync_4k",
        "direct_randread_qd1", "direct_randread_qd8", "direct_randread_qd32",
        "direct_randread_qd32_one_task", "direct_seqwrite_128k_qd8", "scale_cached_read_1_thread",
        "scale_cached_read_2_threads", "scale_direct_qd32_1_thread", "scale_direct_qd32_2_threads"]


def order(names, known):
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def cell(ns):
    return "-" if ns is None else (f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns")


for name, members in (("rows", [g for g in groups if g != "ring_setup"]), ("ring_setup", ["ring_setup"])):
    members = order([g for g in members if g in groups], ROWS)
    if not members:
        continue
    columns = order({b for g in members for b in groups[g]}, BACKENDS)
    if name == "ring_setup":
        print("\n| ring setup (raw ring) | median |\n|---|---:|")
        for backend in columns:
            print(f"| {backend} | {cell(groups['ring_setup'].get(backend))} |")
        continue
    print("| row | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for group in members:
        print(f"| {group} | " + " | ".join(cell(groups[group].get(b)) for b in columns) + " |")
