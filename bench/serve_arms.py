"""Servers side by side: the measurement phases of bench/serve.py and bench/serve_executors.py.

An *arm* is one running `relrec serve` under a label (a C, an executor, a source tree). All
arms are started up front, pinned to the same server cores (an arm that is not being measured
sleeps in epoll), and every phase alternates between them, so that the drift of a shared
machine's other load falls on all: `--rounds` closed loops A, B, C, A, B, C, ..., each followed
by a /healthz closed loop on the same server (the HTTP ceiling of that arm, minutes apart at
most), then each open-loop rate for every arm. The server's own /metrics are scraped around
each closed loop, so CPU per request and the stage times are per arm.
"""

from __future__ import annotations

import argparse
from typing import Any

import serve  # bench/serve.py: server start-up and /metrics parsing
from loadgen import closed_loop, open_loop, run_async


def closed_rounds(
    args: argparse.Namespace, urls: dict[str, str], paths: list[str], health_s: float = 0.0
) -> dict[str, dict[str, Any]]:
    """Per arm: mean req/s over the rounds, mean p50/p99, the server metrics over all its
    rounds (CPU per request, batch, stages) and, when `health_s`, /healthz req/s and the ratio."""
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in urls}
    health: dict[str, list[float]] = {m: [] for m in urls}
    deltas: dict[str, dict[str, float]] = {m: {} for m in urls}
    for r in range(args.rounds):
        for arm, url in urls.items():
            before = serve.server_counters(serve.scrape_workers(url, args.workers))
            row = run_async(closed_loop(url, paths, args.concurrency, args.closed_seconds))
            after = serve.server_counters(serve.scrape_workers(url, args.workers))
            for key, value in after.items():
                deltas[arm][key] = deltas[arm].get(key, 0.0) + value - before.get(key, 0.0)
            runs[arm].append(row)
            line = (
                f"closed loop round {r + 1} {arm:18s}: {row['rps']:7.1f} req/s  p50 "
                f"{row['p50_ms']:6.2f}  p99 {row['p99_ms']:6.2f} ms  errors {row['errors']}"
            )
            if health_s > 0:
                h = run_async(closed_loop(url, ["/healthz"], args.concurrency, health_s))
                health[arm].append(h["rps"])
                line += f"; /healthz {h['rps']:7.1f} req/s, ratio {row['rps'] / h['rps']:.3f}"
            print(line)
    out = {}
    for arm, rows in runs.items():
        n = len(rows)
        out[arm] = {
            "rps": sum(x["rps"] for x in rows) / n,
            "rps_rounds": [x["rps"] for x in rows],
            "p50_ms": sum(x["p50_ms"] for x in rows) / n,
            "p99_ms": sum(x["p99_ms"] for x in rows) / n,
            "errors": sum(x["errors"] for x in rows),
            **serve.stage_report({}, deltas[arm]),
        }
        if health[arm]:
            out[arm]["healthz_rps"] = sum(health[arm]) / len(health[arm])
            out[arm]["ratio"] = out[arm]["rps"] / max(out[arm]["healthz_rps"], 1e-9)
    return out


def open_rates(
    args: argparse.Namespace, urls: dict[str, str], paths: list[str]
) -> dict[str, list[dict[str, float]]]:
    """Each rate of `--rates` for every arm in turn; latency from the scheduled send time."""
    out: dict[str, list[dict[str, float]]] = {m: [] for m in urls}
    for rate in (float(x) for x in args.rates.split(",") if x):
        for arm, url in urls.items():
            row = run_async(open_loop(url, paths, rate, args.rate_seconds))
            out[arm].append(row)
            print(
                f"open loop {rate:6.0f} req/s {arm:18s}: achieved {row['achieved_rps']:7.1f}  "
                f"p50 {row['p50_ms']:7.2f}  p99 {row['p99_ms']:7.2f}  p99.9 "
                f"{row['p999_ms']:7.2f} ms  errors {row['errors']}  late {row['late']}"
            )
    return out


def one_at_a_time(
    args: argparse.Namespace, urls: dict[str, str], paths: list[str]
) -> dict[str, dict[str, float]]:
    """One connection per arm, each request sent when the last is answered: the unloaded
    latency, free of queueing and of an open loop's send schedule."""
    out = {}
    for arm, url in urls.items():
        row = out[arm] = run_async(closed_loop(url, paths, 1, args.single_seconds))
        print(
            f"one at a time {arm:18s}: {row['rps']:7.1f} req/s  p50 {row['p50_ms']:6.2f}  "
            f"p99 {row['p99_ms']:6.2f}  p99.9 {row['p999_ms']:6.2f} ms  errors {row['errors']}"
        )
    return out


CLOSED_ROWS = (
    ("rps", "closed loop req/s (mean of rounds)", ",.0f"),
    ("healthz_rps", "/healthz req/s, same server, same rounds", ",.0f"),
    ("ratio", "recommend ÷ /healthz", ".3f"),
    ("p50_ms", "closed loop p50 ms", ".1f"),
    ("p99_ms", "closed loop p99 ms", ".1f"),
    ("server_cpu_ms", "server CPU per request, ms (workers)", ".3f"),
    ("history_ms", "history read per request, ms (wall, per batch ÷ its requests)", ".3f"),
    ("retrieval_ms", "retrieval per request, ms (wall, ditto)", ".3f"),
    ("rerank_ms", "re-rank per request, ms (wall, ditto)", ".3f"),
    ("serialize_ms", "serialize per request, ms (wall)", ".3f"),
    ("mean_batch", "mean micro-batch", ".1f"),
)


def table(result: dict[str, Any], arms: list[str]) -> str:
    """Markdown: one row per figure, one column per arm, then each ÷ the first."""
    base = arms[0]
    head = f"| | {' | '.join(arms)} | " + " | ".join(f"{m} ÷ {base}" for m in arms[1:]) + " |"
    lines = [head, "|---" + "|---:" * (2 * len(arms) - 1) + "|"]

    def row(name: str, values: dict[str, float], fmt: str) -> None:
        ratios = " | ".join(
            f"{values[m] / values[base]:.2f}×" if values[base] else "-" for m in arms[1:]
        )
        lines.append(
            f"| {name} | " + " | ".join(format(values[m], fmt) for m in arms) + f" | {ratios} |"
        )

    closed: dict[str, dict[str, float]] = result["closed_loop"]
    for key, name, fmt in CLOSED_ROWS:
        if all(key in closed[m] for m in arms):
            row(name, {m: closed[m][key] for m in arms}, fmt)
    opened: dict[str, list[dict[str, float]]] = result["open_loop"]
    for i, first in enumerate(opened[base]):
        for key in ("achieved_rps", "p50_ms", "p99_ms", "p999_ms"):
            label = key.removesuffix("_ms").replace("p999", "p99.9").replace("_rps", " req/s")
            unit = "" if key == "achieved_rps" else " ms"
            row(
                f"open loop {first['rate']:.0f} req/s: {label}{unit}",
                {m: opened[m][i][key] for m in arms},
                ".1f",
            )
    single: dict[str, dict[str, float]] = result.get("single", {})
    if single and all(m in single for m in arms):
        for key in ("p50_ms", "p99_ms"):
            row(f"one request at a time: {key.removesuffix('_ms')} ms",
                {m: single[m][key] for m in arms}, ".2f")
    return "\n".join(lines)
