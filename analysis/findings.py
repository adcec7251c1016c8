"""Which differences between teacher snapshots lie within seed noise, said plainly.

The groups are those of stats.snapshot_summary (each teacher snapshot's config chosen on validation, teacher
seeds pooled, plus the CE-only baseline; complete configs only); the comparisons are every snapshot against the
baseline, every pair of snapshots of one teacher, and every pair of teachers at the same snapshot epoch, each a
t-test on the per-seed values: paired when both groups have the same seeds, Welch's otherwise.
"""
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import stats
from .labels import metric_name, percent, snapshot_label, teacher_names


@dataclass
class Findings:
    headline: str
    comparisons: list = field(default_factory=list)   # stats.Comparison
    holm: list = field(default_factory=list)          # survives Holm correction, per comparison
    seed_std: float = math.nan                         # median seed-to-seed std over groups (fraction)

    @property
    def exceeding(self):
        return [c for c in self.comparisons if c.exceeds_noise]

    def lines(self) -> list[str]:
        """The statements, the differences that exceed seed noise first."""
        out = []
        tested = sum(1 for c in self.comparisons if c.verdict != "too few seeds")
        for c, keep in zip(self.comparisons, self.holm):
            if c.exceeds_noise:
                out.append(c.text + ("" if keep else f" It does not survive Holm correction for the {tested} "
                                                     f"comparisons made here: treat it as tentative."))
        out += [c.text for c in self.comparisons if not c.exceeds_noise]
        return out


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def seed_noise_findings(tables, trials: pd.DataFrame, metric: str = "final_test_acc",
                        select_on: str = "final_val_acc", confidence: float = 0.95) -> Findings:
    """`trials`: the trials to judge (usually tables.trials or a filter of it; only complete configs count)."""
    trials = stats.completed(trials)
    trials = trials[trials[metric].notna()]
    if trials.empty:
        return Findings("No config has all its seeds finished yet (ASHA stops and errors leave a config "
                        "incomplete): there is nothing to compare.")
    summ = stats.snapshot_summary(trials, metric, select_on, confidence)
    names = teacher_names(tables.teachers, "teacher_config")
    n_images = stats.eval_images(trials, metric)
    groups = [(r, snapshot_label(r, names), r["values"]) for _, r in summ.iterrows()]
    n_max = int(summ["n"].max())
    seed_std = float(np.nanmedian(summ["std"].to_numpy(dtype=float))) if n_max > 1 else math.nan
    pairs = []
    base = [g for g in groups if pd.isna(g[0]["teacher_config"])]
    kd = [g for g in groups if pd.notna(g[0]["teacher_config"])]
    for g in kd:
        if base:
            pairs.append((g, base[0]))
    for a, b in itertools.combinations(kd, 2):
        same_teacher = a[0]["teacher_config"] == b[0]["teacher_config"]
        same_epoch = a[0]["snapshot_epoch"] == b[0]["snapshot_epoch"]
        if same_teacher or same_epoch:
            pairs.append((a, b))
    comps = [stats.compare(a[2], b[2], a[1], b[1], metric, confidence, n_images, _covers(a[0], b[0]))
             for a, b in pairs]
    tested = [c for c in comps if c.verdict in ("exceeds seed noise", "within seed noise")]
    keep_tested = iter(stats.holm([c.p for c in tested], 1 - confidence))
    holm = [next(keep_tested) if c.verdict in ("exceeds seed noise", "within seed noise") else False for c in comps]
    what = metric_name(metric)
    if n_max <= 1:
        headline = (f"Every configuration ran with a single seed, so the seed-to-seed noise is unknown and no "
                    f"difference in {what} between snapshots, teachers or the CE-only baseline can be called a "
                    f"finding. Single short runs commonly differ by several points from seed to seed (the seed study saw swings of 5 points). Rerun with "
                    f"several seeds, e.g. `--set 'seed=[0,1,2]'`, to tell effects from noise.")
    elif not comps:
        headline = (f"There is only one group ({groups[0][1]}), so there is nothing to compare; its seed-to-seed "
                    f"standard deviation is {percent(seed_std)} points.")
    else:
        exceed = [c for c, k in zip(comps, holm) if c.exceeds_noise]
        strong = sum(1 for c, k in zip(comps, holm) if c.exceeds_noise and k)
        few = sum(1 for c in comps if c.verdict in ("too few seeds", stats.UNDETERMINED))
        paired = sum(1 for c in tested if c.paired)
        headline = (f"Seed-to-seed standard deviation of {what}: {percent(seed_std)} points (median over groups). "
                    f"Of {_n(len(comps), 'comparison')}, {len(exceed)} exceed{'s' if len(exceed) == 1 else ''} seed "
                    f"noise (the {int(round(100 * confidence))}% confidence interval of the difference excludes 0; "
                    f"{paired} paired t-test{'s' if paired != 1 else ''} on the per-seed differences where both "
                    f"groups have the same seeds, {len(tested) - paired} Welch) and {len(comps) - len(exceed) - few} "
                    f"lie{'s' if len(comps) - len(exceed) - few == 1 else ''} within it")
        headline += (f"; {few} cannot be judged (a group has one seed, or no seed-to-seed variation and no known "
                     f"image count)." if few else ".")
        if len(tested) > 1:
            headline += (f" With {len(tested)} tests, about {0.05 * len(tested):.1f} would exceed noise by chance "
                         f"alone; {strong} remain after Holm correction.")
        if not exceed:
            headline += " No difference between these groups can be called a finding."
        if summ["configs"].gt(1).any():
            headline += (" Each snapshot's alpha/T/KD config was chosen on validation accuracy among several, "
                         "which flatters the chosen configs a little.")
    return Findings(headline, comps, holm, seed_std)


def _covers(a, b) -> str:
    """Which seeds the CI of a comparison covers: "student seeds", or "teacher and student seeds" (or, when the
    two groups differ, both phrases)."""
    return a["covers"] if a["covers"] == b["covers"] else f"{a['covers']} / {b['covers']}"
