"""``make reproduce``: small-scale reproductions of the thesis' claims on 2 CPU cores, written to REPRODUCTION.md.

Every part is an ordinary sweep (``reproduction/grids/*.yaml``, plus the shipped ``lines_digits`` grid) submitted to
the local pool with a SQLite store under ``reproduction/runs/`` and waited for, then reported with ``sweep report``.
Submitting again trains only runs without a result, so an interrupted ``make reproduce`` continues where it stopped.
From the stored results this script judges each claim by a rule written next to it (never by tuning a grid until it
passes), copies one figure per claim from the sweep reports into ``reproduction/figures/`` and writes
``REPRODUCTION.md`` at the repository root.

Usage: ``python reproduction/reproduce.py [--root DIR] [--out FILE] [--workers N]``.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import lsbench
from lsbench.lines.arrays import read_lines
from lsbench.report.lines import line_findings
from lsbench.store import Store
from lsbench.store.rows import RunRow
from lsbench.sweep import api

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GRIDS = HERE / "grids"
SHIPPED = REPO / "src" / "lsbench" / "sweep" / "grids"
FIGURES = HERE / "figures"

PARTS = {  # sweep name -> grid file, in the order they run
    "repro_exact": GRIDS / "repro_exact.yaml",
    "repro_table": GRIDS / "repro_table.yaml",
    "repro_batch128": GRIDS / "repro_batch128.yaml",
    "repro_batch32": GRIDS / "repro_batch32.yaml",
    "repro_batch8": GRIDS / "repro_batch8.yaml",
    "lines_digits": SHIPPED / "lines_digits.yaml",
    "repro_matfac": GRIDS / "repro_matfac.yaml",
}
REPORTS = {  # sweep report NAME [--compare ...]: the reports the figures come from
    "repro_exact": (),
    "repro_table": (),
    "repro_batch128": ("repro_batch32", "repro_batch8"),
    "lines_digits": (),
    "repro_matfac": (),
}


@dataclass
class Claim:
    """One claim of the thesis and what the reproduction found."""

    title: str
    source: str  # figure or table of the thesis
    statement: str  # the thesis' claim, in our words
    measured: str  # Markdown: numbers, tables
    verdict: str  # reproduced / partly / not reproduced
    why: str  # the rule and how the numbers met it
    figure: str | None = None  # path relative to the repository root


# ------------------------------------------------------------------------------------------------- running


def run_parts(root: Path, workers: int | None) -> None:
    """Submit every part and wait for it (a part whose runs all have results trains nothing), then report."""
    for name, grid in PARTS.items():
        submitted = api.submit(grid, root=root, workers=workers)
        queued = list(submitted.queued)
        print(f"{name}: {len(queued)} runs to train", flush=True)
        if queued:
            result = api.wait(name, queued, root=root)
            if result.stalled:
                sys.exit(f"{name}: runs were left unfinished without a worker; run make reproduce again")
    for name, compare in REPORTS.items():
        api.report(name, compare=list(compare), root=root)


def training_span(root: Path, name: str) -> tuple[float, float]:
    """Seconds from the first attempt's start to the last attempt's end of a part, and the sum of its attempts'
    durations: what training it cost, read from the store (so a resumed reproduction still reports it)."""
    sweep = api.open_sweep(root, name)
    with Store(sweep.store_url()) as store:
        ids = {row.run_id for row in store.sweep_runs(sweep.name)}
        attempts = [a for a in store.attempts() if a.run_id in ids and a.ended_at is not None]
    if not attempts:
        return 0.0, 0.0
    span = max(a.ended_at for a in attempts) - min(a.started_at for a in attempts)
    busy = sum((a.ended_at - a.started_at).total_seconds() for a in attempts)
    return span.total_seconds(), busy


def runs_of(root: Path, name: str) -> list[RunRow]:
    sweep = api.open_sweep(root, name)
    with Store(sweep.store_url()) as store:
        return store.sweep_runs(sweep.name)


def copy_figure(root: Path, sweep: str, file: str, target: str) -> str:
    """Copy ``file`` of the sweep's report into reproduction/figures/ and return its path from the repository root."""
    FIGURES.mkdir(exist_ok=True)
    shutil.copyfile(api.open_sweep(root, sweep).reports / file, FIGURES / target)
    return str((FIGURES / target).relative_to(REPO))


def mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def final(row: RunRow, key: str) -> float:
    value = row.summary.get(key)
    return math.nan if value is None else float(value)


def verdict_of(held: list[bool]) -> str:
    """A claim checked in several settings: reproduced in all, partly in some, not in none."""
    return "reproduced" if all(held) else "partly" if any(held) else "not reproduced"


def pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


# ------------------------------------------------------------------------------------------------- claims


def claim_angle(root: Path) -> Claim:
    rule = "reproduced if the median angle over the runs' lines is within 90 ± 10°, partly within 90 ± 20°"
    rows = [
        r for r in runs_of(root, "repro_exact") if r.optimizer == "pal" and r.hparams["update_step_adaptation"] == 1.0
    ]
    angles = np.concatenate([read_lines(r.arrays).angle for r in rows])
    median, (p10, p90) = float(np.median(angles)), np.percentile(angles, [10, 90])
    first = rows[0]
    verdict = "reproduced" if abs(median - 90) <= 10 else "partly" if abs(median - 90) <= 20 else "not reproduced"
    return Claim(
        "PAL performs a near-exact line search on the batch loss",
        "Figure 4.2 (Section 4.3)",
        "With update-step adaptation 1, the angle between PAL's line direction and the mini-batch gradient at its "
        "new point is close to 90°: PAL lands near the minimum of the batch loss along the line.",
        f"PAL (update-step adaptation 1, direction adaptation 0.4 as by default, both measuring step sizes, 3 "
        f"seeds) on the digits MLP, 600 steps, a line every 5th step: median angle **{median:.1f}°** over "
        f"{len(angles)} steps (10–90 % of steps: {p10:.1f}°–{p90:.1f}°).",
        verdict,
        rule,
        copy_figure(root, "repro_exact", f"lines_{first.run_id}_angle.png", "fig4_2_angle.png"),
    )


def claim_exact(root: Path) -> Claim:
    rule = (
        "reproduced if the exact line search's median angle is within 90 ± 5° (it finds the batch minimum) and its "
        "final training loss and test accuracy (means over seeds) are both worse than those of PAL's best point "
        "(chosen on validation accuracy); partly if only one of the two is worse"
    )
    rows = runs_of(root, "repro_exact")
    exact = [r for r in rows if r.optimizer == "exact_ls"]
    angles = np.concatenate([read_lines(r.arrays).angle for r in exact])
    pal_points: dict[str, list[RunRow]] = {}
    for r in rows:
        if r.optimizer == "pal":
            pal_points.setdefault(repr(sorted(r.hparams.items())), []).append(r)
    best = max(pal_points.values(), key=lambda runs: mean(final(r, "val_acc") for r in runs))
    exact_loss, exact_acc = mean(final(r, "train_loss") for r in exact), mean(final(r, "test_acc") for r in exact)
    pal_loss, pal_acc = mean(final(r, "train_loss") for r in best), mean(final(r, "test_acc") for r in best)
    median = float(np.median(angles))
    worse = [exact_loss > pal_loss, exact_acc < pal_acc]
    lands = abs(median - 90) <= 5
    verdict = verdict_of(worse) if lands else "not reproduced"
    best_point = ", ".join(
        f"{k}={v:g}" for k, v in best[0].hparams.items() if k in ("measuring_step_size", "update_step_adaptation")
    )
    return Claim(
        "An exact line search on the batch loss optimizes worse than PAL",
        "Figure 4.12 (Section 4.6)",
        "A binary line search with up to 20 loss evaluations per line lands on the minimum of the batch loss along "
        "the line, yet trains worse than PAL: exact steps on mini-batch losses are not what makes PAL work.",
        "Digits MLP, 600 steps, 3 seeds:\n\n"
        "| optimizer | median angle after the step | final training loss | test accuracy |\n"
        "|---|---|---|---|\n"
        f"| exact line search | {median:.1f}° | {exact_loss:.4f} | {pct(exact_acc)} |\n"
        f"| PAL, best point ({best_point}) | "
        f"{float(np.median(np.concatenate([read_lines(r.arrays).angle for r in best]))):.1f}° | {pal_loss:.4f} | "
        f"{pct(pal_acc)} |",
        verdict,
        rule,
        copy_figure(root, "repro_exact", "curves_digits_mlp.png", "fig4_12_curves.png"),
    )


def claim_table(root: Path) -> Claim:
    rule = (
        "reproduced if on both problems the better LABPAL variant's best point (chosen on validation) reaches a test "
        "accuracy at least PAL's and within 1 percentage point of SGD's; partly if that holds on one problem"
    )
    rows = {(row.problem, row.optimizer): row for row in api.aggregate("repro_table", root=root)}
    lines = [
        "| problem | optimizer | points | train loss min / median [p25, p75] | test accuracy max / median [p25, p75] |",
        "|---|---|---|---|---|",
    ]
    held = []
    for problem in ("digits_mlp", "digits_cnn"):
        for optimizer in ("sgd", "pal", "labpal_sgd", "labpal_nsgd", "sls"):
            r = rows[(problem, optimizer)]
            lines.append(
                f"| {problem} | {optimizer} | {r.points} | {r.train_loss_min:.4f} / {r.train_loss_median:.4f} "
                f"[{r.train_loss_p25:.4f}, {r.train_loss_p75:.4f}] | {pct(r.test_acc_max)} / {pct(r.test_acc_median)} "
                f"[{pct(r.test_acc_p25)}, {pct(r.test_acc_p75)}] |"
            )
        labpal = max(rows[(problem, v)].best_test_acc or 0.0 for v in ("labpal_sgd", "labpal_nsgd"))
        pal, sgd = rows[(problem, "pal")].best_test_acc or 0.0, rows[(problem, "sgd")].best_test_acc or 0.0
        held.append(labpal >= pal and abs(labpal - sgd) <= 0.01)
        lines.append(
            f"| {problem} | *best points (test accuracy)* | | | LABPAL {pct(labpal)}, PAL {pct(pal)}, SGD {pct(sgd)} |"
        )
    verdict = verdict_of(held)
    return Claim(
        "LABPAL outperforms PAL and is on par with SGD (Table A.1 form)",
        "Table A.1, Figures 6.4–6.5 (Section 6.4.2)",
        "Both LABPAL variants outperform PAL (and the other line searches) and LABPAL&NSGD is on par with SGD; median "
        "and quartiles over each optimizer's grid points summarize the sensitivity.",
        "Digits MLP and CNN, 600 steps of batch 32, 3 seeds per point (statistics over the points' seed means):\n\n"
        + "\n".join(lines),
        verdict,
        rule,
        copy_figure(root, "repro_table", "box_digits_mlp_penalized.png", "tableA1_box_digits_mlp.png"),
    )


def claim_batch(root: Path) -> Claim:
    rule = (
        "reproduced if at batch sizes 32 and 8 the better LABPAL variant loses less test accuracy against batch 128 "
        "than PAL and than SLS, and PAL or SLS loses more than 1 percentage point; partly if that holds at one size"
    )
    accuracy: dict[tuple[int, str], list[float]] = {}
    for size in (128, 32, 8):
        for row in runs_of(root, f"repro_batch{size}"):
            accuracy.setdefault((size, row.optimizer), []).append(final(row, "test_acc"))
    acc = {key: mean(values) for key, values in accuracy.items()}
    lines = ["| optimizer | batch 128 | batch 32 | batch 8 |", "|---|---|---|---|"]
    for optimizer in ("labpal_sgd", "labpal_nsgd", "pal", "sls"):
        lines.append(f"| {optimizer} | " + " | ".join(pct(acc[(s, optimizer)]) for s in (128, 32, 8)) + " |")
    held = []
    for size in (32, 8):
        drop = {o: acc[(128, o)] - acc[(size, o)] for o in ("labpal_sgd", "labpal_nsgd", "pal", "sls")}
        labpal = min(drop["labpal_sgd"], drop["labpal_nsgd"])
        held.append(labpal < drop["pal"] and labpal < drop["sls"] and max(drop["pal"], drop["sls"]) > 0.01)
    verdict = verdict_of(held)
    return Claim(
        "LABPAL keeps its performance at small batch sizes",
        "Figure 6.7 (Section 6.4.3)",
        "At batch sizes 32 and 8 LABPAL, which adapts its measurement and step count to the gradient noise (Eq. 6.8), "
        "keeps its performance, where PAL and SLS lose theirs.",
        "Digits MLP, 3 seeds, mean final test accuracy; PAL and SLS train 128/B times the 300 steps, LABPAL adapts "
        "with ε = 128/B (the batch-size part of Eq. 6.8, see the grids) and multiplies its budget by ε itself:\n\n"
        + "\n".join(lines),
        verdict,
        rule,
        copy_figure(root, "repro_batch128", "box_digits_mlp_penalized.png", "fig6_7_batch_sizes.png"),
    )


def claim_lines(root: Path) -> list[Claim]:
    rows = runs_of(root, "lines_digits")
    findings = {row.hparams["momentum"]: line_findings(read_lines(row.arrays)) for row in rows}
    table = [
        "| momentum | lines | median MAE degree 1 | median MAE degree 2 | ratio | c | R² |",
        "|---|---|---|---|---|---|---|",
    ]
    for momentum, f in sorted(findings.items()):
        table.append(
            f"| {momentum:g} | {f['lines']} | {f['mae_deg1_median']:.2e} | {f['mae_deg2_median']:.2e} | "
            f"{f['mae_ratio']:.3f} | {f['proportionality_constant']:.4f} | {f['proportionality_r2']:.3f} |"
        )
    measured = (
        "Digits MLP, SGD λ = 0.1, 600 steps of batch 32, a line every 2nd step over all 1,197 training images at the "
        "thesis' 167 step sizes:\n\n" + "\n".join(table)
    )
    plain = next(row for row in rows if row.hparams["momentum"] == 0.0)
    ratios = [f["mae_ratio"] for f in findings.values()]
    parabolic = verdict_of([ratio < 0.2 for ratio in ratios])
    r2 = findings[0.0]["proportionality_r2"]
    proportional = "reproduced" if r2 >= 0.8 else "partly" if r2 >= 0.5 else "not reproduced"
    return [
        Claim(
            "The full-batch loss along lines is locally almost parabolic",
            "Figure 5.5 (Section 5.4)",
            "Along the update directions of SGD, a parabola fits the full-batch loss far better than a line, "
            "throughout training.",
            measured,
            parabolic,
            "reproduced if the median degree-2 MAE is below a fifth of the degree-1 MAE for both momenta, partly if "
            "for one",
            copy_figure(root, "lines_digits", f"lines_{plain.run_id}_fits.png", "fig5_5_fits.png"),
        ),
        Claim(
            "The step to the full-batch minimum is almost proportional to ‖g_B‖",
            "Figure 5.7 (Section 5.5)",
            "s_opt, the step to the minimum of the measured full-batch line, is almost proportional to the norm of "
            "the direction-defining mini-batch gradient (SGD without momentum).",
            f"Same runs (momentum 0): s_opt ≈ c·‖g_B‖ with c = {findings[0.0]['proportionality_constant']:.4f}, "
            f"R² = {r2:.3f} over {findings[0.0]['lines']} lines; the drift of c and R² over training is in the "
            "sweep report.",
            proportional,
            "reproduced if R² ≥ 0.8 for SGD without momentum, partly if R² ≥ 0.5",
            copy_figure(root, "lines_digits", f"lines_{plain.run_id}_strategies.png", "fig5_7_strategies.png"),
        ),
    ]


def claim_matfac(root: Path) -> Claim:
    rule = (
        "reproduced if at rank 10 both PAL and SLS reach a final training loss below 1e-8 (mean over seeds) while at "
        "ranks 1 and 4 both stay above 1e-4; partly if this holds for one of the two optimizers"
    )
    loss: dict[tuple[str, str], list[float]] = {}
    for row in runs_of(root, "repro_matfac"):
        loss.setdefault((row.problem, row.optimizer), []).append(final(row, "train_loss"))
    means = {key: mean(values) for key, values in loss.items()}
    problems = sorted({p for p, _ in means}, key=lambda p: int("".join(c for c in p if c.isdigit()) or 0))
    lines = ["| problem | PAL | SLS |", "|---|---|---|"]
    lines += [f"| {p} | {means[(p, 'pal')]:.3g} | {means[(p, 'sls')]:.3g} |" for p in problems]
    interpolating = [p for p in problems if p.endswith("10")]
    held = []
    for optimizer in ("pal", "sls"):
        low = all(means[(p, optimizer)] < 1e-8 for p in interpolating)
        floor = all(means[(p, optimizer)] > 1e-4 for p in problems if p not in interpolating)
        held.append(low and floor)
    verdict = verdict_of(held)
    return Claim(
        "PAL and SLS converge to machine precision only where interpolation holds",
        "Figure 4.14 (Section 4.7)",
        "On the matrix factorization problem of Vaswani et al. (2019, §7.2), PAL and SLS converge linearly to "
        "machine precision with a rank-10 factorization (interpolation holds) and stall at a floor with ranks 1 "
        "and 4.",
        "Final training loss (mean over 3 seeds):\n\n" + "\n".join(lines),
        verdict,
        rule,
        copy_figure(root, "repro_matfac", f"curves_{interpolating[0]}.png", "fig4_14_matfac.png")
        if interpolating
        else None,
    )


CLAIMS: tuple[Callable[[Path], Claim | list[Claim]], ...] = (
    claim_angle,
    claim_table,
    claim_batch,
    claim_lines,
    claim_exact,
    claim_matfac,
)


# ------------------------------------------------------------------------------------------------- writing


def write(out: Path, claims: list[Claim], root: Path) -> None:
    counts = {v: sum(c.verdict == v for c in claims) for v in ("reproduced", "partly", "not reproduced")}
    parts = [
        "# Reproduction of the thesis' claims at small scale",
        "",
        "Written by `make reproduce` (`reproduction/reproduce.py`) from the results of the sweeps it ran; do not edit "
        "by hand. Every claim was run once through the ordinary sweep machinery (local pool, SQLite store) on "
        "digits-sized problems that a 2-core CPU trains in minutes, and judged by the rule stated with it. The thesis "
        "ran CIFAR-10/100, SVHN and ImageNet networks for 150,000 steps; at this scale a claim can fail to show "
        "without being wrong, and the verdicts say only what these runs showed.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, lsbench {lsbench.__version__}.",
        f"Verdicts: {counts['reproduced']} reproduced, {counts['partly']} partly, {counts['not reproduced']} not "
        "reproduced.",
        "",
        "| claim | thesis | verdict |",
        "|---|---|---|",
        *(f"| {c.title} | {c.source} | **{c.verdict}** |" for c in claims),
        "",
    ]
    for claim in claims:
        parts += [
            f"## {claim.title}",
            "",
            f"**Thesis ({claim.source}).** {claim.statement}",
            "",
            f"**Measured.** {claim.measured}",
            "",
            f"**Verdict: {claim.verdict}.** Rule: {claim.why}.",
            "",
        ]
        if claim.figure:
            parts += [f"![{claim.source}]({claim.figure})", ""]
    spans = {name: training_span(root, name) for name in PARTS}
    parts += [
        "## Time",
        "",
        "Per part, from the store: wall-clock seconds from its first run's start to its last run's end (the local "
        "pool runs one worker per core), and the runs' summed seconds (interpreter start-up included).",
        "",
        "| sweep | wall-clock seconds | summed run seconds |",
        "|---|---|---|",
        *(f"| {name} | {span:.0f} | {busy:.0f} |" for name, (span, busy) in spans.items()),
        f"| total | {sum(span for span, _ in spans.values()):.0f} | {sum(b for _, b in spans.values()):.0f} |",
        "",
    ]
    out.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE / "runs", help="sweep root (default reproduction/runs)")
    parser.add_argument("--out", type=Path, default=REPO / "REPRODUCTION.md")
    parser.add_argument("--workers", type=int, default=None, help="local pool size (default: one per core)")
    args = parser.parse_args()
    run_parts(args.root, args.workers)
    claims: list[Claim] = []
    for judge in CLAIMS:
        found = judge(args.root)
        claims += found if isinstance(found, list) else [found]
    write(args.out, claims, args.root)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
