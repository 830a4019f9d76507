"""The report's figures: matplotlib drawings of :mod:`lsbench.report.figures_data`, each as PNG, PDF and CSV.

Every figure is written as ``<name>.png`` (for the page), ``<name>.pdf`` (vector, 7 in wide: a two-column paper's
full width, 3.5 in for single-panel figures) and ``<name>.csv`` (the numbers drawn). Each carries a one-line caption
saying what is plotted, over how many runs, under which divergence convention and how many points diverged.

This module computes no statistic itself; it draws what figures_data returns. It uses matplotlib's Agg backend
only (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lsbench.report import figures_data as fd

__all__ = ["COLUMN_WIDTH_IN", "PAGE_WIDTH_IN", "Figure", "draw_all", "save_figure", "slug"]

_LABELS = {
    "train_loss": "final training loss",
    "val_acc": "validation accuracy",
    "test_acc": "test accuracy",
    "mean_effective_lr": "effective learning rate",
}
COLUMN_WIDTH_IN, PAGE_WIDTH_IN = 3.5, 7.0
"""Figure widths in inches: one column and the whole page of a paper (the sizes the thesis' figures are read at)."""


@dataclass(frozen=True)
class Figure:
    """One written figure: its base name, title, caption and files."""

    name: str
    title: str
    caption: str
    png: Path
    pdf: Path
    csv: Path

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "caption": self.caption, **self.files()}

    def files(self) -> dict[str, str]:
        return {"png": str(self.png), "pdf": str(self.pdf), "csv": str(self.csv)}


def save_figure(fig: plt.Figure, out: Path, name: str, title: str, caption: str, numbers: pd.DataFrame) -> Figure:
    """Write ``fig`` as ``name``.png (for the page) and .pdf (for a paper) and the plotted ``numbers`` as .csv (for
    whoever wants to re-plot or check them); closes the figure."""
    fig.tight_layout()
    paths = {ext: out / f"{name}.{ext}" for ext in ("png", "pdf", "csv")}
    fig.savefig(paths["png"], dpi=110)
    fig.savefig(paths["pdf"])
    plt.close(fig)
    numbers.to_csv(paths["csv"], index=False)
    return Figure(name, title, caption, paths["png"], paths["pdf"], paths["csv"])


def slug(text: str) -> str:
    """``text`` as a file-name part: letters, digits, '-' and '_' kept, everything else '_'."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _by_sweep(optimizers: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The optimizers grouped by sweep when they are labelled ``sweep:optimizer`` (``--compare``: one row of panels
    per compared sweep, y axes shared by column), in the order given; else one group with no name."""
    if not optimizers or not all(":" in o for o in optimizers):
        return [("", list(optimizers))]
    groups: dict[str, list[str]] = {}
    for optimizer in optimizers:
        groups.setdefault(optimizer.split(":", 1)[0], []).append(optimizer)
    return list(groups.items())


def _short(optimizer: str, sweep: str) -> str:
    return optimizer.removeprefix(f"{sweep}:") if sweep else optimizer


def _box(stats: pd.DataFrame, problem: str, convention: str, out: Path) -> Figure:
    mine = stats[stats["problem"] == problem]
    groups = _by_sweep(list(dict.fromkeys(mine["optimizer"])))
    fig, grid = plt.subplots(len(groups), 3, figsize=(PAGE_WIDTH_IN, 2.6 * len(groups)), squeeze=False, sharey="col")
    for (sweep, optimizers), axes in zip(groups, grid, strict=True):
        _box_row(mine, sorted(optimizers), sweep, axes)
    return _box_caption(mine, problem, convention, fig, out)


def _box_row(mine: pd.DataFrame, optimizers: list[str], sweep: str, axes: Sequence[plt.Axes]) -> None:
    """One row of the box-plot figure: the three metrics of ``optimizers`` (one compared sweep, or all)."""
    for ax, metric in zip(axes, fd.METRICS, strict=True):
        rows = mine[mine["metric"] == metric].set_index("optimizer").reindex(optimizers)
        every = mine[mine["metric"] == metric]
        finite = [v for col in ("min", "max") for v in every[col] if math.isfinite(v)]
        cap = (max(finite) * 1.5 if finite and max(finite) > 0 else 1.0) if metric == "train_loss" else 1.0
        boxes = []
        for optimizer, row in rows.iterrows():
            values = {k: row[k] if math.isfinite(row[k]) else (cap if row[k] > 0 else math.nan) for k in fd.QUARTILES}
            boxes.append(
                {
                    "label": _short(str(optimizer), sweep),
                    "whislo": values["min"],
                    "q1": values["p25"],
                    "med": values["median"],
                    "q3": values["p75"],
                    "whishi": values["max"],
                    "fliers": [],
                }
            )
        ax.bxp(boxes, showfliers=False)
        for index, (_optimizer, row) in enumerate(rows.iterrows(), start=1):
            if row["diverged_points"]:
                ax.annotate(f"{int(row['diverged_points'])}↯", (index, 1.0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7, color="firebrick")  # fmt: skip
        if metric == "train_loss" and any(not math.isfinite(v) for v in every[list(fd.QUARTILES)].to_numpy().ravel()):
            ax.axhline(cap, color="firebrick", lw=0.6, ls=":")
        ax.set_title(f"{sweep}: {_LABELS[metric]}" if sweep else _LABELS[metric], fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.tick_params(axis="y", labelsize=7)


def _box_caption(mine: pd.DataFrame, problem: str, convention: str, fig: plt.Figure, out: Path) -> Figure:
    runs = int(mine.drop_duplicates("optimizer")["runs"].sum())
    diverged = int(mine.drop_duplicates("optimizer")["diverged_points"].sum())
    points = int(mine[mine["metric"] == "val_acc"]["points"].sum())
    note = "diverged points at ∞ loss (dotted line) and chance accuracy" if convention == "penalized" else (
        "diverged runs excluded"
    )  # fmt: skip
    caption = (
        f"Box plots per optimizer over {points} grid points (each averaged over its seeds) of {runs} runs on "
        f"{problem}: min, quartiles, max; {note} ({convention} convention); {diverged} of {points} points had a "
        "diverged run (↯)."
    )
    name = f"box_{slug(problem)}_{convention}"
    return save_figure(fig, out, name, f"Sensitivity on {problem} ({convention})", caption, mine)


def _curves(curves: pd.DataFrame, problem: str, metrics: Sequence[str], name: str, title: str, out: Path) -> Figure:
    mine = curves[(curves["problem"] == problem) & curves["metric"].isin(metrics)]
    # Only the metrics the problem has (a regression problem records no accuracies).
    metrics = [metric for metric in metrics if (mine["metric"] == metric).any()] or list(metrics[:1])
    width = PAGE_WIDTH_IN if len(metrics) > 1 else COLUMN_WIDTH_IN
    groups = _by_sweep(sorted(mine["optimizer"].unique()))
    fig, grid = plt.subplots(len(groups), len(metrics), figsize=(width, 2.6 * len(groups)), squeeze=False, sharey="col")
    # The same optimizer has the same colour in every compared sweep's row.
    shorts = sorted({_short(o, sweep) for sweep, optimizers in groups for o in optimizers})
    colours = {short: f"C{index % 10}" for index, short in enumerate(shorts)}
    for (sweep, optimizers), axes in zip(groups, grid, strict=True):
        for ax, metric in zip(axes, metrics, strict=True):
            drawn = mine[(mine["metric"] == metric) & mine["optimizer"].isin(optimizers)]
            for optimizer, line in drawn.groupby("optimizer", sort=True):
                colour = colours[_short(optimizer, sweep)]
                ax.plot(line["step"], line["median"], lw=1.0, label=_short(optimizer, sweep), color=colour)
                ax.fill_between(line["step"], line["min"], line["max"], alpha=0.2, color=colour, lw=0)
            positive = (mine.loc[mine["metric"] == metric, "min"] > 0).all()
            if metric in ("train_loss", "mean_effective_lr") and positive and len(drawn):
                ax.set_yscale("log")
            label = _LABELS.get(metric, metric).removeprefix("final ")
            ax.set_title(f"{sweep}: {label}" if sweep else label, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
        axes[-1].legend(fontsize=6, frameon=False)
    seeds = int(mine.groupby(["optimizer"])["seeds"].max().sum()) if len(mine) else 0
    chosen = "highest mean validation accuracy" if "val_acc" in set(mine["metric"]) else "lowest mean training loss"
    caption = (
        f"{title} on {problem}: median over the seeds of each optimizer's best configuration ({chosen}), band "
        f"min–max; {seeds} runs."
    )
    return save_figure(fig, out, name, f"{title} on {problem}", caption, mine)


def _cost(table: pd.DataFrame, out: Path) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 2.6))
    labels = [f"{row.optimizer}\n{row.problem}" if table["problem"].nunique() > 1 else row.optimizer
              for row in table.itertuples()]  # fmt: skip
    has_sgd = table["relative"].notna().any()
    panels = (
        ("relative", "seconds_per_step", "time per step ÷ SGD", "seconds per step"),
        ("gpu_hours_relative", "gpu_hours", "GPU-hours ÷ SGD", "GPU-hours"),
    )
    for ax, (relative, absolute, relative_label, absolute_label) in zip(axes, panels, strict=True):
        heights = table[relative].where(table[relative].notna(), table[absolute])
        ax.bar(range(len(table)), heights, color="steelblue")
        if has_sgd:
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.set_xticks(range(len(table)), labels, rotation=45, fontsize=6, ha="right")
        ax.set_ylabel(relative_label if has_sgd else absolute_label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    caption = (
        f"Seconds per step (left) and GPU-hours of all runs (right) per optimizer"
        f"{' relative to SGD on the same problem' if has_sgd else ' (no SGD run to compare with)'}, from the recorded "
        f"times of {int(table['runs'].sum())} runs; absolute values in the CSV."
    )
    return save_figure(fig, out, "cost", "Cost per step and GPU-hours", caption, table)


def _sensitivity(table: pd.DataFrame, problem: str, convention: str, out: Path) -> Figure:
    mine = table[table["problem"] == problem]
    panels = list(mine.groupby(["optimizer", "hparam"], sort=False).groups)
    columns = min(len(panels), 4)
    blocks = math.ceil(len(panels) / columns)
    metrics = ("val_acc", "train_loss")
    fig, axes = plt.subplots(2 * blocks, columns, figsize=(PAGE_WIDTH_IN, 2.0 * 2 * blocks), squeeze=False)
    for ax in axes.ravel()[2 * len(panels) :]:
        ax.set_visible(False)
    for index, (optimizer, hparam) in enumerate(panels):
        rows = mine[(mine["optimizer"] == optimizer) & (mine["hparam"] == hparam)]
        values = [float(v) for v in rows["value"]]
        for offset, metric in enumerate(metrics):
            ax = axes[2 * (index // columns) + offset][index % columns]
            y = rows[metric].astype(float).to_numpy()
            finite = y[np.isfinite(y)]
            cap = (finite.max() * 1.5 if len(finite) and finite.max() > 0 else 1.0) if metric == "train_loss" else 1.0
            shown = np.where(np.isinf(y), cap, y)
            ax.plot(values, shown, marker="o", ms=3, lw=1.0, color="steelblue")
            base = rows["base"].to_numpy(dtype=bool)
            ax.plot(np.asarray(values)[base], shown[base], marker="*", ms=8, lw=0, color="darkorange")
            if np.isinf(y).any():
                ax.axhline(cap, color="firebrick", lw=0.6, ls=":")
            for x, v, diverged in zip(values, shown, rows["diverged"], strict=True):
                if diverged:
                    ax.annotate(f"{int(diverged)}↯", (x, v), ha="center", va="bottom", fontsize=6, color="firebrick")
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and len(values) > 1 and max(values) / min(values) >= 20:
                ax.set_xscale("log")
            if metric == "train_loss" and len(finite) and (finite > 0).all() and finite.max() / finite.min() >= 20:
                ax.set_yscale("log")
            ax.set_title(f"{optimizer}: {hparam}" if offset == 0 else "", fontsize=8)
            ax.set_ylabel(_LABELS[metric] if index % columns == 0 else "", fontsize=7)
            ax.tick_params(labelsize=6)
    distinct = mine.drop_duplicates(["optimizer", "point"])
    points, diverged = len(distinct), int(distinct["diverged"].sum())
    note = "diverged runs at ∞ loss (dotted line) and chance accuracy" if convention == "penalized" else (
        "diverged runs excluded"
    )  # fmt: skip
    caption = (
        f"One-at-a-time sensitivity on {problem}: final validation accuracy and training loss of {points} points "
        f"(each averaged over its seeds) against each varied hyperparameter, the others at the base point (★); "
        f"{note} ({convention} convention); {diverged} diverged runs (↯)."
    )
    name = f"sensitivity_{slug(problem)}_{convention}"
    return save_figure(fig, out, name, f"One-at-a-time sensitivity on {problem} ({convention})", caption, mine)


def _profile(steps: pd.DataFrame, profile: pd.DataFrame, out: Path) -> Figure:
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 2.6))
    for optimizer, line in profile.groupby("optimizer", sort=True):
        ax.step(line["tau"], line["rho"], where="post", lw=1.0, label=optimizer)
    ax.set_xlabel("τ (steps ÷ fastest optimizer's steps)", fontsize=8)
    ax.set_ylabel("fraction of problems", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, frameon=False)
    caption = (
        f"Dolan–Moré performance profiles over {steps['problem'].nunique()} problems: fraction on which an optimizer's "
        "best configuration reaches 95 % of the best final validation accuracy within τ × the fastest one's steps."
    )
    return save_figure(fig, out, "performance_profile", "Performance profiles", caption, steps.merge(profile, "left"))


def draw_all(
    data: fd.ReportData,
    out: Path,
    conventions: Sequence[str] = fd.CONVENTIONS,
    axes: Mapping[str, tuple[Mapping[str, object], Sequence[str]]] | None = None,
) -> list[Figure]:
    """Draw every figure of ``data`` into ``out`` (created) and return them in page order. ``axes``: the
    optimizers built with ``vary:``, for the sensitivity figures (:func:`lsbench.report.figures_data.sensitivity`)."""
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    problems = sorted(data.runs["problem"].unique())
    stats = {convention: fd.box_stats(data.runs, convention) for convention in conventions}
    curves = fd.best_curves(data, ("train_loss", "val_acc", "test_acc", "mean_effective_lr"))
    varied = {convention: fd.sensitivity(data.runs, axes or {}, convention) for convention in conventions}
    for problem in problems:
        for convention in conventions:
            figures.append(_box(stats[convention], problem, convention, out))
        for convention in conventions:
            if (varied[convention]["problem"] == problem).any():
                figures.append(_sensitivity(varied[convention], problem, convention, out))
        if (curves["problem"] == problem).any():
            figures.append(
                _curves(curves, problem, fd.METRICS, f"curves_{slug(problem)}", "Best-configuration curves", out)
            )
        if ((curves["problem"] == problem) & (curves["metric"] == "mean_effective_lr")).any():
            figures.append(
                _curves(curves, problem, ("mean_effective_lr",), f"lr_{slug(problem)}", "Effective learning rate", out)
            )
    table = fd.cost(data.runs)
    if len(table):
        figures.append(_cost(table, out))
    if len(problems) >= 2:
        steps, profile = fd.performance_profiles(curves)
        if len(profile):  # problems without accuracies (regression) have no profile
            figures.append(_profile(steps, profile, out))
    return figures
