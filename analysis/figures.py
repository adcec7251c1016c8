"""The figures of an ESKD study, drawn with matplotlib and saved as PNG and SVG.

Each figure function takes the Tables and returns a matplotlib Figure, or raises SkipFigure with the reason
when the sweep lacks the axis it needs (e.g. no alpha x T grid); `make_figures` draws them all.
Seed statistics use only the complete configs, whose every seed ran all its epochs (analysis.stats.completed),
with teacher seeds pooled; the students of the configs ASHA stopped for some or all seeds are drawn apart, as
hollow markers at the accuracy of the last epoch they ran. Every CI says which seeds it covers.

Importing this module changes nothing global: each figure is a matplotlib Figure on its own Agg canvas (no
pyplot, no backend switch), drawn and saved under the report's style in a matplotlib.rc_context.
"""
import functools
import io
from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from tune_eskd.blobs import filesystem, write_bytes

from . import stats
from .importance import importance as knob_importance
from .labels import CE_ONLY, arch_name, asha_stopped, kd_text, knob_text, snapshot_label, teacher_names
from .stats import METRIC, SELECT_ON

STYLE = {"figure.dpi": 110, "savefig.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
         "axes.spines.right": False, "font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9,
         "legend.framealpha": 0.9}
CE_COLOR = "0.35"
KD_SHADE = "#f4a261"
MAX_LINES = 6                 # KD configs drawn per panel before they are averaged by kd_epochs
HOLLOW = {"marker": "o", "s": 42, "facecolors": "none", "linewidths": 1.4}   # an ASHA-stopped student
STOPPED = "_asha_stopped"     # the label of every collection of left-out students ("_": not a legend entry)
TEACHER = "teacher_config"    # a teacher group: its seeds pooled


class SkipFigure(Exception):
    """The sweep lacks what this figure needs; the message says what, in words."""


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    png: bytes | None = None
    png_path: str | None = None
    svg_path: str | None = None
    skipped: str | None = None   # why it was not drawn


def _styled(draw):
    """Draw the figure under STYLE (ticks and some text are made only when the figure is rendered, so `render`
    applies the style again)."""
    @functools.wraps(draw)
    def styled(tables):
        with matplotlib.rc_context(STYLE):
            return draw(tables)
    return styled


def _subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    """A Figure on its own Agg canvas and its axes, as plt.subplots makes them, without pyplot's global state."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _teacher_colors(hashes) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {h: cmap(i % 10) for i, h in enumerate(sorted(hashes))}


def _usable(tables):
    done = stats.completed(tables.trials)
    return done[done[METRIC].notna()]


def _stopped(tables):
    """The students of configs ASHA stopped for some or all of their seeds (the stopped ones and the survivors),
    with the accuracy of the last epoch they ran: never in a mean or CI."""
    t = tables.trials
    asha_hit = t["stopped_by_asha"].groupby(stats.config_key(t), sort=False).transform("any").astype(bool)
    return t[asha_hit & ~stats.config_complete(t) & (t["status"] == "TERMINATED") & t[METRIC].notna()]


def _covers(tables) -> str:
    """Which seeds the CIs of a figure cover, e.g. "teacher and student seeds (CE-only: student seeds)"."""
    done = _usable(tables)
    kd, ce = stats.ci_covers(_kd(done)), stats.ci_covers(_ce(done))
    return kd if kd == ce or _ce(done).empty else f"{kd} (CE-only: {ce})"


def _hollow(ax, x, y, color) -> int:
    """Draw ASHA-stopped students as hollow markers; returns how many were drawn."""
    if len(x):
        ax.scatter(x, y, edgecolors=[color], zorder=4, label=STOPPED, **HOLLOW)
    return len(x)


def _hollow_legend(ax, stopped):
    if len(stopped):
        ax.scatter([], [], edgecolors="0.3", label=asha_stopped(stopped["epochs_run"]), **HOLLOW)


def _snapshot_tag(ax, epoch, x, y, color):
    """"eN" centred above the point (x, y), on a white box so that it stays legible where a line or a marker
    runs under it."""
    ax.annotate(f"e{int(epoch)}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=9,
                color=color, weight="bold", zorder=6,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


def _kd(trials):
    return trials[trials["method"] == "KD"]


def _ce(trials):
    return trials[trials["method"] == "CE-only"]


def _int_xaxis(ax):
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _ci_err(mean, lo, hi) -> np.ndarray:
    """Asymmetric error bars (in points) for a confidence interval clipped to 0-100%; none where it is NaN."""
    mean, lo, hi = (np.asarray(v, dtype=float) for v in (mean, lo, hi))
    lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
    return 100 * np.nan_to_num(np.vstack([mean - lo, hi - mean]), nan=0.0)


def _seed_note(n_values) -> str:
    n = sorted(set(int(v) for v in n_values if v > 0))
    if not n:
        return ""
    if n == [1]:
        return "one seed each: no confidence intervals, differences are not findings"
    return f"{n[0]}-{n[-1]} seeds per point" if len(n) > 1 else f"{n[0]} seeds per point"


# ---------------------------------------------------------------------------------------------------------------

@_styled
def teacher_curves(tables):
    """Teacher validation and test accuracy per epoch, with the snapshot epochs marked."""
    te = tables.teacher_epochs
    if te.empty:
        raise SkipFigure("no teacher training curve was found (teacher.json or the teachers stage)")
    names = teacher_names(tables.teachers) or {h: arch_name(a) for h, a in zip(te["teacher_hash"], te["arch"])}
    colors = _teacher_colors(te["teacher_hash"].unique())
    fig, ax = _subplots(figsize=(7.5, 4.5))
    for h, g in te.groupby("teacher_hash", sort=True):
        name = names.get(h, arch_name(g["arch"].iloc[0]))
        ax.plot(g["epoch"], 100 * g["val_acc"], "-", color=colors[h], lw=2, label=f"{name} teacher, validation")
        ax.plot(g["epoch"], 100 * g["test_acc"], ":", color=colors[h], lw=1.5, label=f"{name} teacher, test")
        snaps = tables.teachers[tables.teachers["teacher_hash"] == h]
        ax.scatter(snaps["snapshot_epoch"], 100 * snaps["val_acc"], s=70, color=colors[h], edgecolor="black",
                   zorder=5)
    # One tag per snapshot epoch (every teacher's snapshot there is "eN"), above the highest snapshot marker.
    for e, top in tables.teachers.groupby("snapshot_epoch")["val_acc"].max().items():
        _snapshot_tag(ax, e, e, 100 * top, "black")
    ax.scatter([], [], s=70, color="white", edgecolor="black", label="snapshot (validation accuracy)")
    ax.margins(x=0.08, y=0.08)
    ax.set_xlabel("Teacher epoch")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title("Teacher accuracy per epoch, with the snapshots students distill from")
    _int_xaxis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


@_styled
def student_curves(tables):
    """Student validation accuracy per epoch, one panel per teacher snapshot, the KD phase shaded."""
    trials = tables.trials[tables.trials["epochs_run"] > 0]
    kd = _kd(trials)
    if kd.empty:
        raise SkipFigure("the sweep has no KD students (kd_epochs > 0) with reported epochs")
    ep = tables.epochs.merge(trials[["trial_id", TEACHER, "snapshot_epoch", "kd_epochs", "alpha",
                                     "temperature", "method"]], on="trial_id")
    names = teacher_names(tables.teachers, TEACHER)
    hashes = sorted(kd[TEACHER].dropna().unique())
    snaps = sorted(int(s) for s in kd["snapshot_epoch"].dropna().unique())
    fig, axes = _subplots(len(hashes), len(snaps), figsize=(3.6 * len(snaps) + 1.2, 3.0 * len(hashes) + 1.2),
                             sharex=True, sharey=True, squeeze=False)
    ce = ep[ep["method"] == "CE-only"].groupby("epoch")["val_acc"].mean()
    configs = kd.groupby(["kd_epochs", "alpha", "temperature"]).size().index.tolist()
    by_kd_only = len(configs) > MAX_LINES
    keys = sorted(set(k[0] for k in configs)) if by_kd_only else configs
    cmap = matplotlib.colormaps["Dark2"]
    colors = {k: cmap(i % 8) for i, k in enumerate(keys)}
    handles = {}
    for i, h in enumerate(hashes):
        for j, s in enumerate(snaps):
            ax = axes[i][j]
            panel = ep[(ep[TEACHER] == h) & (ep["snapshot_epoch"] == s)]
            for k in sorted(panel["kd_epochs"].dropna().unique()):
                span = ax.axvspan(0.5, int(k) + 0.5, color=KD_SHADE, alpha=0.12, lw=0)
                handles.setdefault("KD phase (shaded)", span)
            if len(ce):
                (line,) = ax.plot(ce.index, 100 * ce.to_numpy(), "--", color=CE_COLOR, lw=1.5)
                handles.setdefault(f"{CE_ONLY}, mean over seeds", line)
            group = ["kd_epochs"] if by_kd_only else ["kd_epochs", "alpha", "temperature"]
            for key, g in panel.groupby(group, sort=True):
                key = key if isinstance(key, tuple) else (key,)
                per_epoch = g.groupby("epoch")["val_acc"]
                mean, lo, hi = per_epoch.mean(), per_epoch.min(), per_epoch.max()
                c = colors[key[0] if by_kd_only else key]
                (line,) = ax.plot(mean.index, 100 * mean.to_numpy(), "-o", color=c, lw=1.8, ms=3)
                if g["trial_id"].nunique() > 1:
                    ax.fill_between(mean.index, 100 * lo.to_numpy(), 100 * hi.to_numpy(), color=c, alpha=0.15, lw=0)
                label = (f"{kd_text(key[0])}, then CE (mean of alpha, T)" if by_kd_only
                         else knob_text({"kd_epochs": key[0], "alpha": key[1], "temperature": key[2]}))
                handles.setdefault(label, line)
            ax.set_title(f"{names.get(h, h)} teacher, snapshot e{s}")
            _int_xaxis(ax)
            if i == len(hashes) - 1:
                ax.set_xlabel("Student epoch")
            if j == 0:
                ax.set_ylabel("Validation accuracy (%)")
    stopped = ("\nUnder ASHA, later epochs average only the students it did not stop."
               if trials["stopped_by_asha"].any() else "")
    fig.suptitle("Student validation accuracy per epoch\n(lines: mean over seeds; bands: range over seeds)"
                 + stopped)
    for ax in axes.flat:
        ax.set_xlim(0.5, int(trials["epochs"].max()) + 0.5)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(3, len(handles)),
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    rows = (len(handles) + 2) // 3
    fig.tight_layout(rect=(0, 0.035 * rows + 0.02, 1, 0.97))
    return fig


def _snapshot_points(tables):
    """The seed statistics of the completed students per snapshot (stats.snapshot_summary, the CE-only row
    included) and the KD students ASHA stopped early; SkipFigure when there is no KD student of either kind."""
    trials, stopped = _usable(tables), _kd(_stopped(tables))
    if _kd(trials).empty and stopped.empty:
        raise SkipFigure("no KD student has finished all its epochs or been stopped by ASHA yet")
    return stats.snapshot_summary(trials, METRIC, SELECT_ON), stopped


@_styled
def final_by_snapshot(tables):
    """Final student test accuracy per snapshot epoch, one series per teacher, 95% CI over seeds; students ASHA
    stopped early drawn hollow at their last epoch's accuracy."""
    summ, stopped = _snapshot_points(tables)
    names = teacher_names(tables.teachers, TEACHER)
    kd = summ[summ[TEACHER].notna()]
    hashes = sorted(set(kd[TEACHER]) | set(stopped[TEACHER]))
    colors = _teacher_colors(hashes)
    fig, ax = _subplots(figsize=(7.5, 4.5))
    offsets = np.linspace(-0.08, 0.08, len(hashes)) if len(hashes) > 1 else [0.0]
    drawn = 0
    for off, h in zip(offsets, hashes):
        g = kd[kd[TEACHER] == h].sort_values("snapshot_epoch")
        ax.errorbar(g["snapshot_epoch"].astype(float).to_numpy() + off, 100 * g["mean"].to_numpy(),
                    yerr=_ci_err(g["mean"], g["ci_low"], g["ci_high"]), fmt="-o", color=colors[h], capsize=4,
                    lw=1.8, ms=6, label=f"{names.get(h, h)} teacher")
        s = stopped[stopped[TEACHER] == h]
        drawn += _hollow(ax, s["snapshot_epoch"].astype(float).to_numpy() + off + 0.04,   # beside the CI bar
                         100 * s[METRIC].to_numpy(), colors[h])
    ce = summ[summ[TEACHER].isna()]
    if len(ce):
        r = ce.iloc[0]
        band = "" if np.isnan(r["ci_half"]) else ", band: 95% CI"
        ax.axhline(100 * r["mean"], color=CE_COLOR, ls="--", lw=1.5, label=f"{CE_ONLY}{band}")
        if not np.isnan(r["ci_half"]):
            ax.axhspan(100 * max(r["ci_low"], 0), 100 * min(r["ci_high"], 1), color=CE_COLOR, alpha=0.12, lw=0)
    _hollow_legend(ax, stopped)
    epochs = sorted({int(e) for e in kd["snapshot_epoch"]} | {int(e) for e in stopped["snapshot_epoch"]}
                    | {int(e) for e in tables.teachers["snapshot_epoch"].dropna()})
    ax.set_xticks(epochs, [f"e{e}" for e in epochs])
    ax.set_xlim(min(epochs) - 0.4, max(epochs) + 0.4)
    ax.set_xlabel("Teacher snapshot (teacher epoch the student distills from)")
    ax.set_ylabel("Final student test accuracy (%)")
    multi = (kd["configs"] > 1).any()
    ax.set_title(f"Final student test accuracy by teacher snapshot\n(mean over seeds; bars: 95% CI over {_covers(tables)}"
                 + ("; best alpha/T/KD per snapshot, chosen on validation)" if multi else ")"))
    _footnote(fig, ax, tables, summ["n"], drawn)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _footnote(fig, ax, tables, n_values, drawn=0):
    """Seed count and the ASHA-stopped students (`drawn` of them drawn hollow), in words, under the axes."""
    notes = [_seed_note(n_values)]
    stopped = len(_stopped(tables))
    if drawn:
        notes.append(f"hollow markers: {drawn} students of configs ASHA stopped for some or all seeds, at their last "
                     f"epoch's accuracy (not in the means or CIs)")
    if stopped > drawn:
        notes.append(f"{stopped - drawn} {'other ' if drawn else ''}students of configs ASHA stopped are left out")
    notes = [n for n in notes if n]
    if notes:
        ax.annotate("\n".join(notes), xy=(0, 0), xycoords="axes fraction", xytext=(0, -42),
                    textcoords="offset points", fontsize=8, color="0.3", va="top")


@_styled
def teacher_vs_student(tables):
    """Each snapshot's own test accuracy against its students' final test accuracy (ASHA-stopped students
    hollow, at their last epoch's accuracy)."""
    summ, stopped = _snapshot_points(tables)
    pooled = tables.teachers.groupby([TEACHER, "snapshot_epoch"], as_index=False)["test_acc"].mean()  # over seeds
    kd = summ[summ[TEACHER].notna()].astype({TEACHER: "object"}).merge(
        pooled.astype({TEACHER: "object"}), on=[TEACHER, "snapshot_epoch"], how="left")
    kd = kd[kd["test_acc"].notna()]
    stopped = stopped[stopped["snapshot_test_acc"].notna()]
    if kd.empty and stopped.empty:
        raise SkipFigure("the teacher snapshots' accuracies are not in the snapshot store")
    names = teacher_names(tables.teachers, TEACHER)
    hashes = sorted(set(kd[TEACHER]) | set(stopped[TEACHER]))
    colors = _teacher_colors(hashes)
    fig, ax = _subplots(figsize=(7, 5))
    drawn = 0
    for h in hashes:
        g = kd[kd[TEACHER] == h].sort_values("snapshot_epoch")
        s = stopped[stopped[TEACHER] == h]
        ax.errorbar(100 * g["test_acc"], 100 * g["mean"], yerr=_ci_err(g["mean"], g["ci_low"], g["ci_high"]), fmt="-o",
                    color=colors[h], capsize=4, lw=1, ms=7, label=f"{names.get(h, h)} teacher")
        drawn += _hollow(ax, 100 * s["snapshot_test_acc"], 100 * s[METRIC], colors[h])
        # one tag per snapshot, above the top of what is drawn there (CI bar, mean or a stopped student)
        tops = pd.concat([g.assign(top=np.fmin(np.fmax(g["mean"], g["ci_high"]), 1.0)),
                          s.rename(columns={"snapshot_test_acc": "test_acc"}).assign(top=s[METRIC])])
        for e, p in tops.groupby("snapshot_epoch"):
            _snapshot_tag(ax, e, 100 * p["test_acc"].iloc[0], 100 * p["top"].max(), colors[h])
    ce = summ[summ[TEACHER].isna()]
    if len(ce):
        ax.axhline(100 * ce.iloc[0]["mean"], color=CE_COLOR, ls="--", lw=1.5, label=CE_ONLY)
    lo = max(0.0, min(ax.get_xlim()[0], ax.get_ylim()[0]))
    hi = min(100.0, max(ax.get_xlim()[1], ax.get_ylim()[1]))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls=":", label="student = teacher")
    _hollow_legend(ax, stopped)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("Teacher snapshot test accuracy (%)")
    ax.set_ylabel("Student final test accuracy (%)")
    ax.set_title("Does a more accurate teacher snapshot make a better student?\n"
                 f"(labels: snapshot epoch; bars: 95% CI over {_covers(tables)})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _footnote(fig, ax, tables, summ["n"], drawn)
    return fig


@_styled
def ce_vs_kd(tables):
    """CE-only baseline against KD-then-CE students: one row per teacher snapshot and KD length; students ASHA
    stopped early drawn hollow at their last epoch's accuracy."""
    trials, stopped = _usable(tables), _stopped(tables)
    ce = _ce(trials)
    if ce.empty:
        raise SkipFigure("the sweep has no finished CE-only baseline (kd_epochs 0 in the search space)")
    if _kd(trials).empty and _kd(stopped).empty:
        raise SkipFigure("no KD student has finished all its epochs or been stopped by ASHA yet")
    names = teacher_names(tables.teachers, TEACHER)
    rows = [(CE_ONLY, ce[METRIC], _ce(stopped)[METRIC], None)]   # (label, completed, stopped, kd_epochs)
    epochs_max = int(tables.trials["epochs"].max())
    for (h, snap, k), g in _kd(pd.concat([trials, stopped])).groupby([TEACHER, "snapshot_epoch", "kd_epochs"],
                                                                     sort=True):
        left_out = g["trial_id"].isin(stopped["trial_id"])
        done = g[~left_out]
        if len(done):
            best = stats.best_configs(done, SELECT_ON, METRIC, top=1).iloc[0]
            done = done[(done["alpha"] == best["alpha"]) & (done["temperature"] == best["temperature"])]
        label = snapshot_label({TEACHER: h, "snapshot_epoch": snap}, names)
        rows.append((label, done[METRIC], g.loc[left_out, METRIC], int(k)))
    kds = sorted({r[3] for r in rows if r[3] is not None})
    cmap = matplotlib.colormaps["plasma"]
    kd_colors = {k: cmap(0.15 + 0.6 * i / max(1, len(kds) - 1)) for i, k in enumerate(kds)}
    fig, ax = _subplots(figsize=(8, 0.42 * len(rows) + 1.8))
    n_values, drawn = [], 0
    for y, (label, values, stopped_values, k) in enumerate(rows):
        color = CE_COLOR if k is None else kd_colors[k]
        s = stats.summary(values)
        n_values.append(s.n)
        ax.scatter(100 * values, np.full(len(values), y), s=14, color=color, alpha=0.45, zorder=3)
        if s.n:
            ax.errorbar(100 * s.mean, y, xerr=_ci_err([s.mean], [s.ci_low], [s.ci_high]), fmt="D", color=color, ms=7,
                        capsize=4, zorder=4)
        drawn += _hollow(ax, 100 * stopped_values, np.full(len(stopped_values), y + 0.18), color)   # under the CI bar
    ax.axvline(100 * ce[METRIC].mean(), color=CE_COLOR, ls="--", lw=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    for k in kds:
        what = f"KD all {k} epochs" if k >= epochs_max else f"{kd_text(k)}, then CE"
        ax.errorbar([], [], xerr=[], fmt="D", color=kd_colors[k], label=what)
    ax.errorbar([], [], xerr=[], fmt="D", color=CE_COLOR, label="CE only (kd_epochs 0)")
    ax.scatter([], [], s=14, color="0.5", alpha=0.6, label="one seed")
    _hollow_legend(ax, stopped)
    ax.set_xlabel("Final student test accuracy (%)")
    knobs = _kd(trials).groupby([TEACHER, "snapshot_epoch", "kd_epochs"])[["alpha", "temperature"]]
    several = knobs.nunique().gt(1).any().any()
    ax.set_title(f"CE-only baseline vs KD-then-CE students\n(diamonds: mean with 95% CI over {_covers(tables)}"
                 + ("; best alpha/T per row, chosen on validation)" if several else ")"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0)
    _footnote(fig, ax, tables, n_values, drawn)
    return fig


@_styled
def alpha_temperature(tables):
    """Mean final validation accuracy on the alpha x temperature grid, one heatmap per teacher snapshot."""
    kd = _kd(_usable(tables))
    if kd.empty:
        raise SkipFigure("no KD student finished all its epochs yet")
    alphas, temps = sorted(kd["alpha"].dropna().unique()), sorted(kd["temperature"].dropna().unique())
    if len(alphas) < 2 and len(temps) < 2:
        raise SkipFigure(f"alpha ({alphas[0]:g}) and temperature ({temps[0]:g}) are fixed in this sweep")
    if len(alphas) > 8 or len(temps) > 8:
        raise SkipFigure("alpha or temperature was sampled from a distribution (more than 8 values): "
                         "no grid to draw; see the trials table")
    note = ""
    if kd["kd_epochs"].nunique() > 1:
        best_k = kd.groupby("kd_epochs")[SELECT_ON].mean().idxmax()
        kd = kd[kd["kd_epochs"] == best_k]
        note = f"; KD {int(best_k)} epochs, the best KD length on validation"
    names = teacher_names(tables.teachers, TEACHER)
    hashes = sorted(kd[TEACHER].unique())
    snaps = sorted(int(s) for s in kd["snapshot_epoch"].unique())
    cells = kd.groupby([TEACHER, "snapshot_epoch", "alpha", "temperature"])[SELECT_ON].agg(["mean", "size"])
    vmin, vmax = 100 * cells["mean"].min(), 100 * cells["mean"].max()
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig, axes = _subplots(len(hashes), len(snaps), figsize=(1.1 * len(temps) * len(snaps) + 2.8,
                                                                0.9 * len(alphas) * len(hashes) + 1.6),
                             squeeze=False)
    im = None
    for i, h in enumerate(hashes):
        for j, s in enumerate(snaps):
            ax = axes[i][j]
            grid = np.full((len(alphas), len(temps)), np.nan)
            counts = np.zeros_like(grid, dtype=int)
            for a_i, a in enumerate(alphas):
                for t_i, t in enumerate(temps):
                    if (h, s, a, t) in cells.index:
                        grid[a_i, t_i] = 100 * cells.loc[(h, s, a, t), "mean"]
                        counts[a_i, t_i] = cells.loc[(h, s, a, t), "size"]
            im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
            for a_i in range(len(alphas)):
                for t_i in range(len(temps)):
                    if not np.isnan(grid[a_i, t_i]):
                        dark = (grid[a_i, t_i] - vmin) / (vmax - vmin) < 0.55
                        ax.text(t_i, a_i, f"{grid[a_i, t_i]:.1f}%\nn={counts[a_i, t_i]}", ha="center",
                                va="center", fontsize=8, color="white" if dark else "black")
            ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
            ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
            ax.grid(False)
            ax.set_title(f"{names.get(h, h)}, snapshot e{s}", fontsize=10)
            if i == len(hashes) - 1:
                ax.set_xlabel("Temperature T")
            if j == 0:
                ax.set_ylabel("alpha (KD weight)")
    stopped = len(_stopped(tables))
    left_out = f"; {stopped} students of configs ASHA stopped left out" if stopped else ""
    fig.suptitle(f"Mean final student validation accuracy (%) over alpha x T{note}\n"
                 f"(n = seeds per cell{left_out}; choose alpha and T on validation, never on test)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    cax = fig.add_axes((0.91, 0.15, 0.02, 0.7))
    fig.colorbar(im, cax=cax, label="Validation accuracy (%)")
    return fig


def _asha_bounds(tables, trials) -> tuple[int, int]:
    """(grace period, max_t) the sweep's ASHA ran with, as its record (sweep.json) states them under "asha".
    A record written before the sweep stored them has only the options: their defaults are filled in as the
    pipeline fills them (right after the longest KD phase; the students' epochs)."""
    ran = tables.sweep.get("asha") or {}
    if ran.get("grace_period") and ran.get("max_t"):
        return int(ran["grace_period"]), int(ran["max_t"])
    opts = tables.sweep.get("options", {})
    max_t = opts.get("max_t") or int(trials["epochs"].max())
    kd_max = int(trials["kd_epochs"].max()) if trials["kd_epochs"].notna().any() else 0
    return opts.get("grace_period") or min(kd_max + 1, max_t), max_t


@_styled
def asha_epochs(tables):
    """For ASHA sweeps: how many epochs each student trained before it finished or was stopped."""
    if tables.scheduler != "asha":
        raise SkipFigure("the sweep ran without ASHA (scheduler fifo): every trial trains all its epochs")
    t = tables.trials[tables.trials["epochs_run"] > 0].copy()
    if t.empty:
        raise SkipFigure("no student has reported an epoch yet")
    names = teacher_names(tables.teachers, TEACHER)
    grace, max_t = _asha_bounds(tables, t)
    colors = {"ran all epochs": "#2a9d8f", "stopped by ASHA": "#e76f51", "still running / other": "0.6"}

    def kind(r):
        if r["stopped_by_asha"]:
            return "stopped by ASHA"
        return "ran all epochs" if r["status"] == "TERMINATED" else "still running / other"

    t["kind"] = t.apply(kind, axis=1)
    if len(t) <= 40:
        t["label"] = t.apply(lambda r: f"{snapshot_label(r, names)}"
                             + (f", {knob_text(r)}" if knob_text(r) else "") + f", seed {r['seed']}", axis=1)
        t = t.sort_values(["epochs_run", SELECT_ON], ascending=[True, True])
        fig, ax = _subplots(figsize=(9, 0.28 * len(t) + 1.8))
        ax.barh(range(len(t)), t["epochs_run"], color=[colors[k] for k in t["kind"]])
        ax.set_yticks(range(len(t)), t["label"], fontsize=7.5)
        ax.set_xlabel("Epochs trained")
        ax.grid(axis="y", alpha=0)
        ax.set_xlim(0, max(max_t, int(t["epochs_run"].max())) + 0.5)
    else:
        fig, ax = _subplots(figsize=(7, 4.5))
        xs = sorted(t["epochs_run"].unique())
        bottom = np.zeros(len(xs))
        for k, c in colors.items():
            counts = np.array([((t["epochs_run"] == x) & (t["kind"] == k)).sum() for x in xs])
            if counts.any():
                ax.bar(xs, counts, bottom=bottom, color=c, label=k)
                bottom += counts
        ax.set_xlabel("Epochs trained")
        ax.set_ylabel("Student trials")
        _int_xaxis(ax)
    line = ax.axvline(grace, color="black", ls="--", lw=1)
    handles = [Rectangle((0, 0), 1, 1, color=c) for k, c in colors.items() if (t["kind"] == k).any()]
    labels = [k for k in colors if (t["kind"] == k).any()]
    _int_xaxis(ax)
    ax.legend(handles + [line], labels + [f"grace period ({grace} epochs):\nfirst ASHA cut"], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    stopped = int(t["stopped_by_asha"].sum())
    ax.set_title(f"Epochs each student trained under ASHA ({stopped} of {len(t)} stopped early)")
    return fig


@_styled
def importance(tables):
    """What matters most: the share of the variance in final validation accuracy each knob explains (permutation
    importance of a random forest on held-out seeds, analysis.importance)."""
    result = knob_importance(tables.trials)
    if result.skipped:
        raise SkipFigure(result.skipped)
    t = result.table.iloc[::-1]      # the largest on top
    fig, ax = _subplots(figsize=(7.5, 0.5 * len(t) + 2.2))
    colors = ["#2a9d8f" if v > 0 else "0.7" for v in t["share"]]
    ax.barh(t["knob"], 100 * t["share"], xerr=100 * t["std"], color=colors, capsize=3, ecolor="0.4")
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="y", alpha=0)
    ax.set_xlabel("Share of the variance in final validation accuracy the knob explains (%)")
    verdict = ("the knobs together explain {:.0f}% on held-out seeds".format(100 * result.r2) if result.r2 > 0 else
               "the knobs do not predict held-out seeds better than their mean: no knob stands out from seed noise")
    ax.set_title(f"What matters most\n({verdict})")
    notes = [f"{result.n} students of complete configs, scored on held-out seeds; bars: mean ± std over shuffles",
             "permutation importance of a random forest (scikit-learn); seeds are noise, not a knob"]
    if result.fixed:
        notes.append(f"fixed in this sweep: {', '.join(result.fixed)}")
    ax.annotate("\n".join(notes), xy=(0, 0), xycoords="axes fraction", xytext=(0, -48),
                textcoords="offset points", fontsize=8, color="0.3", va="top")
    return fig


FIGURES = [
    ("teacher_curves", "Teacher accuracy per epoch", teacher_curves,
     "Validation (solid) and test (dotted) accuracy of each teacher per epoch; circles mark the snapshots."),
    ("student_curves", "Student accuracy per epoch, per snapshot", student_curves,
     "Student validation accuracy per epoch for each teacher snapshot; the KD phase is shaded, the CE-only "
     "baseline dashed."),
    ("final_by_snapshot", "Final student accuracy by snapshot and teacher", final_by_snapshot,
     "Final student test accuracy for each teacher snapshot (mean over seeds, 95% CI), with the CE-only "
     "baseline as a dashed line and band. Under ASHA, hollow markers are the students it stopped early, at the "
     "accuracy of their last epoch (not in the means)."),
    ("teacher_vs_student", "Teacher snapshot accuracy vs student accuracy", teacher_vs_student,
     "Each point is a teacher snapshot: its own test accuracy (x) against its students' final test accuracy (y); "
     "hollow markers are students ASHA stopped early, at the accuracy of their last epoch."),
    ("ce_vs_kd", "CE-only vs KD-then-CE", ce_vs_kd,
     "Final test accuracy of the CE-only baseline and of KD-then-CE students, per snapshot and KD length; "
     "dots are single seeds, hollow markers students ASHA stopped early (accuracy at their last epoch)."),
    ("alpha_temperature", "alpha x temperature", alpha_temperature,
     "Mean final validation accuracy over the alpha x temperature grid for each teacher snapshot."),
    ("asha_epochs", "Epochs per trial under ASHA", asha_epochs,
     "Epochs each student trained before it finished or ASHA stopped it."),
    ("importance", "What matters most", importance,
     "How much of the variance in final validation accuracy each knob explains: half the growth of a random "
     "forest's squared error on held-out seeds when the knob's values are shuffled, over the variance "
     "(scikit-learn permutation importance). Seeds are noise, not a knob."),
]


def render(fig) -> tuple[bytes, bytes]:
    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(png, format="png", bbox_inches="tight")
        fig.savefig(svg, format="svg", bbox_inches="tight")
    return png.getvalue(), svg.getvalue()


def make_figures(tables, out_dir: str | None = None, only=None) -> list[FigureResult]:
    """Draw every figure (or those named in `only`); with out_dir (a local path or URI), save NAME.png and
    NAME.svg there. A figure the sweep cannot support comes back with .skipped set to the reason."""
    results = []
    for name, title, fn, caption in FIGURES:
        if only and name not in only:
            continue
        res = FigureResult(name, title, caption)
        try:
            fig = fn(tables)
        except SkipFigure as exc:
            res.skipped = str(exc)
            results.append(res)
            continue
        png, svg = render(fig)
        res.png = png
        if out_dir:
            fsys, d = filesystem(out_dir)
            write_bytes(fsys, f"{d}/{name}.png", png)
            write_bytes(fsys, f"{d}/{name}.svg", svg)
            res.png_path, res.svg_path = f"{out_dir}/{name}.png", f"{out_dir}/{name}.svg"
        results.append(res)
    return results


__all__ = ["FIGURES", "FigureResult", "SkipFigure", "make_figures"]
