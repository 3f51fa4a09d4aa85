"""`relrec report`: one self-contained HTML page of figures from run directories (issue 19).

A run directory is what `relrec train --out` (or `bench/quality.py`, one per model-seed) writes:
`metrics.json` always; `train.npz` + `item_ids.json` (per-item popularity) for every run since
issue 17 and the saved models before; both read through `training/run_dir.py`;
`topk.csv` when the run was trained with `--topk-out RUN/topk.csv` (catalogue coverage and the
popularity of every recommended item). What a run lacks is said on the page, never faked.
Figures are PNGs embedded as base64, so the file opens anywhere with no network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.interactions import DataError
from training.run_dir import METRICS_FILE, RunDirError, item_popularity, read_metrics

METRICS = ("precision", "recall", "ndcg", "map", "mrr")
TOPK_FILE = "topk.csv"


class ReportError(DataError):
    """A RUN argument cannot be reported on; the message names it and says why."""


@dataclass
class RunInfo:
    path: Path
    doc: dict[str, Any]
    item_pop: np.ndarray | None = None  # train interactions per item row
    item_index: dict[str, int] | None = None  # external item id -> row
    top_items: list[str] | None = None  # every recommended item (external ids), all users
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model(self) -> str:
        return str(self.doc["model"])


def load_run(path: Path) -> RunInfo:
    try:
        run = RunInfo(path, read_metrics(path))
    except RunDirError as exc:
        raise ReportError(str(exc)) from None
    popularity = item_popularity(path)
    if popularity is not None:
        item_ids, run.item_pop = popularity
        run.item_index = {item: row for row, item in enumerate(item_ids)}
    topk = path / TOPK_FILE
    if topk.is_file():
        with topk.open(newline="", encoding="utf-8") as f:
            run.top_items = [row["item"] for row in csv.DictReader(f)]
    return run


def load_runs(paths: list[str | Path]) -> list[RunInfo]:
    """Each RUN is a run directory, or a folder of them (a `bench/quality.py --out`)."""
    runs: list[RunInfo] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise ReportError(f"{path}: not a run directory (expected the --out of relrec train)")
        if (path / METRICS_FILE).is_file():
            runs.append(load_run(path))
            continue
        children = sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}"))
        if not children:
            raise ReportError(f"{path}: no metrics.json here or in its subdirectories; is it "
                              "the --out of relrec train?")
        runs.extend(load_run(child) for child in children)
    return runs


def group_by_model(runs: list[RunInfo]) -> dict[str, list[RunInfo]]:
    groups: dict[str, list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(run.model, []).append(run)
    return groups


def summarise(group: list[RunInfo], metric: str) -> tuple[float, float | None]:
    """Mean and error bar: the std across seeds with several runs, the 95% CI over users
    with one (None where the run recorded no spread)."""
    values = np.array([r.doc["metrics"][metric] for r in group], dtype=float)
    if len(values) > 1:
        return float(values.mean()), float(values.std(ddof=1))
    ci = (group[0].doc.get("spread", {}).get(metric) or {}).get("ci95")
    return float(values[0]), None if ci is None else float(ci)


def coverage(run: RunInfo) -> float | None:
    """Distinct recommended items over the catalogue size (train items)."""
    if run.top_items is None:
        return None
    n_items = len(run.item_pop) if run.item_pop is not None else run.doc.get("data", {}).get(
        "items")
    return len(set(run.top_items)) / n_items if n_items else None


def recommended_popularity(run: RunInfo) -> np.ndarray | None:
    """Train popularity of every recommended item (None without top-k lists and counts)."""
    if run.top_items is None or run.item_pop is None or run.item_index is None:
        return None
    rows = [run.item_index[i] for i in run.top_items if i in run.item_index]
    return run.item_pop[np.array(rows, dtype=np.int64)]


# --- figures ---------------------------------------------------------------------------------

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def fig_curves(runs: list[RunInfo]):
    import matplotlib.pyplot as plt

    with_curve = [r for r in runs if (r.doc.get("training") or {}).get("curve")]
    if not with_curve:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(r.model for r in with_curve))  # one colour per model
    styles, seen = ("-", "--", ":", "-."), dict.fromkeys(models, 0)
    for run in with_curve:
        training = run.doc["training"]
        curve = training["curve"]
        style = styles[seen[run.model] % len(styles)]
        seen[run.model] += 1
        line, = ax.plot([c["epoch"] for c in curve], [c["valid"] for c in curve], style,
                        marker=".", label=run.name,
                        color=colors[models.index(run.model) % len(colors)])
        best = [c for c in curve if c["epoch"] == training.get("best_epoch")]
        if best:
            ax.plot(best[0]["epoch"], best[0]["valid"], "o", ms=9, mfc="none",
                    color=line.get_color())
    k = with_curve[0].doc.get("k", 10)
    ax.set(xlabel="epoch", ylabel=f"validation NDCG@{k}",
           title="Validation metric per epoch (circle: selected epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=max(1, len(with_curve) // 8), loc="best")
    return fig


def fig_metrics(groups: dict[str, list[RunInfo]], k: int):
    import matplotlib.pyplot as plt

    models = list(groups)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.6), sharey=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, METRICS, strict=True):
        stats = [summarise(groups[m], metric) for m in models]
        means = [s[0] for s in stats]
        errs = [0.0 if s[1] is None else s[1] for s in stats]
        ax.bar(range(len(models)), means, yerr=errs, capsize=4,
               color=[colors[i % len(colors)] for i in range(len(models))])
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{metric}@{k}")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test metrics per model (error bar: std across seeds, or 95% CI over users "
                 "for a single run)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_popularity(groups: dict[str, list[RunInfo]]):
    """Left: median popularity of recommended items per model (always in metrics.json).
    Right, when top-k lists and train counts exist: share of recommendations by popularity
    decile of the catalogue (the long tail is the right-hand deciles)."""
    import matplotlib.pyplot as plt

    models = list(groups)
    tails = {m: [p for p in map(recommended_popularity, groups[m]) if p is not None]
             for m in models}
    has_tail = any(tails.values())
    catalogue = next((r.item_pop for g in groups.values() for r in g if r.item_pop is not None),
                     None)
    n_panels = 1 + (catalogue is not None) + has_tail
    fig, axes = plt.subplots(1, n_panels, figsize=(5.5 * n_panels, 3.8), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    med = [float(np.mean([r.doc["metrics"]["median_popularity"] for r in groups[m]]))
           for m in models]
    ax.bar(range(len(models)), med, color="tab:gray")
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="train interactions", title="Median popularity of recommended items")
    ax.grid(axis="y", alpha=0.3)
    if catalogue is not None:  # the catalogue's long tail, each model's median marked on it
        ax = axes.pop(0)
        ranked = np.sort(catalogue)[::-1]
        ax.plot(np.arange(1, len(ranked) + 1), np.maximum(ranked, 0.5), color="black", lw=1)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (m, value) in enumerate(zip(models, med, strict=True)):
            ax.axhline(max(value, 0.5), ls="--", lw=1, color=colors[i % len(colors)], label=m)
        ax.set(yscale="log", xlabel="item rank by train popularity", ylabel="train interactions",
               title="Catalogue long tail; dashed: median of recommended")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if has_tail:
        ax = axes.pop(0)
        width = 0.8 / max(1, sum(1 for t in tails.values() if t))
        shown = 0
        for m in models:
            if not tails[m]:
                continue
            run = next(r for r in groups[m] if r.item_pop is not None)
            ranked = np.sort(run.item_pop)[::-1]  # item popularity, most popular first
            edges = ranked[np.linspace(0, len(ranked) - 1, 11).astype(int)]
            pops = np.concatenate(tails[m])
            # decile d holds items ranked between the d-th and (d+1)-th tenth of the catalogue
            decile = np.clip(np.searchsorted(-edges, -pops, side="left") - 1, 0, 9)
            share = np.bincount(decile, minlength=10) / len(pops)
            ax.bar(np.arange(10) + shown * width, share, width=width, label=m)
            shown += 1
        ax.set_xticks(np.arange(10) + 0.4 - width / 2,
                      [f"{10 * d}-{10 * d + 10}%" for d in range(10)], rotation=45, fontsize=7)
        ax.set(xlabel="catalogue popularity decile (most popular first)",
               ylabel="share of recommendations", title="Long tail: where recommendations fall")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def fig_coverage(groups: dict[str, list[RunInfo]]):
    import matplotlib.pyplot as plt

    cov = {m: [c for c in map(coverage, g) if c is not None] for m, g in groups.items()}
    cov = {m: c for m, c in cov.items() if c}
    if not cov:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    models = list(cov)
    ax.bar(range(len(models)), [100 * float(np.mean(cov[m])) for m in models],
           color="tab:green")
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="% of catalogue", title="Catalogue coverage of the test users' top-k lists")
    ax.grid(axis="y", alpha=0.3)
    return fig


# --- page ------------------------------------------------------------------------------------

def _table(groups: dict[str, list[RunInfo]], k: int) -> str:
    head = "".join(f"<th>{m}@{k}</th>" for m in METRICS)
    rows = []
    for model, group in groups.items():
        cells = []
        for metric in METRICS:
            mean, err = summarise(group, metric)
            cells.append(f"<td>{mean:.4f}" + ("" if err is None else f" ± {err:.4f}") + "</td>")
        med = np.mean([r.doc["metrics"]["median_popularity"] for r in group])
        rows.append(f"<tr><td>{html.escape(model)}</td><td>{len(group)}</td>{''.join(cells)}"
                    f"<td>{med:.0f}</td></tr>")
    return (f"<table><tr><th>model</th><th>runs</th>{head}<th>median pop</th></tr>"
            + "".join(rows) + "</table>")


def _unavailable(runs: list[RunInfo]) -> list[str]:
    notes = []
    no_curve = [r.name for r in runs if not (r.doc.get("training") or {}).get("curve")]
    if no_curve:
        notes.append("No training curve (baselines, or runs written before curves were "
                     "recorded): " + ", ".join(no_curve))
    no_topk = [r.name for r in runs if r.top_items is None]
    if no_topk:
        notes.append(f"No top-k lists ({TOPK_FILE}), so no catalogue coverage and no per-item "
                     "popularity of recommendations; only the median popularity from "
                     "metrics.json (train with --topk-out RUN/topk.csv to get them): "
                     + ", ".join(no_topk))
    no_pop = [r.name for r in runs if r.top_items is not None and r.item_pop is None]
    if no_pop:
        notes.append("Top-k lists but no train.npz/item_ids.json, so left out of the "
                     "long-tail deciles: "
                     + ", ".join(no_pop))
    return notes


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}figure{margin:1.5em 0}figcaption{color:#555;font-size:13px}")


def render_html(runs: list[RunInfo], title: str = "relrec report") -> str:
    """The page: summary table, figures, and what the runs did not contain."""
    import matplotlib

    matplotlib.use("Agg")
    groups = group_by_model(runs)
    k = int(runs[0].doc.get("k", 10))
    figures = [
        ("Validation metric per epoch for every run with a training curve.", fig_curves(runs)),
        ("Every test metric per model.", fig_metrics(groups, k)),
        ("Popularity of recommended items.", fig_popularity(groups)),
        ("Catalogue coverage: distinct recommended items / items in train.",
         fig_coverage(groups)),
    ]
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(runs)} runs, {len(groups)} models: "
            + ", ".join(html.escape(m) for m in groups) + "</p>", _table(groups, k)]
    for caption, fig in figures:
        if fig is not None:
            body.append(f'<figure><img alt="{html.escape(caption)}" '
                        f'src="data:image/png;base64,{_png(fig)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    notes = _unavailable(runs)
    if notes:
        body.append("<h2>Not available</h2><ul>"
                    + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    body.append("<h2>Runs</h2><ul>" + "".join(
        f"<li>{html.escape(r.name)} ({html.escape(r.model)}): {html.escape(str(r.path))}</li>"
        for r in runs) + "</ul>")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(paths: list[str | Path], out: str | Path, title: str = "relrec report") -> Path:
    runs = load_runs(paths)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(render_html(runs, title), encoding="utf-8")
    return out_path
