"""What matters most: how much of the variance in final validation accuracy each knob explains.

A random forest (scikit-learn) learns final validation accuracy from the knobs. A knob's permutation importance
(sklearn.inspection.permutation_importance) is the growth of the squared error when that knob's values are
shuffled, pooled over held-out folds. Shuffling a knob whose effect adds to the others' grows the squared error
by twice the variance that effect contributes, so half the growth, over the variance, is the knob's share of the
variance. Seeds are noise, not a knob: they never enter as a feature, each seed's common
offset (a seed that is lucky for every config) is taken out first, and the importance is measured on held-out
seeds (fit on the other seeds, score on this one; plain 5-fold splits when there is one seed), so a forest that
memorised seed noise earns nothing for it. Only complete configs count (analysis.stats.completed).
"""
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import stats

METRIC = "final_val_acc"
# (feature, words); CE-only students enter with kd_epochs 0 and no teacher: depth, snapshot, alpha and T all 0.
KNOBS = [("snapshot_epoch", "snapshot epoch"), ("teacher_depth", "teacher depth"), ("alpha", "alpha"),
         ("temperature", "temperature T"), ("kd_epochs", "KD epochs"), ("lr", "student lr")]
TEACHER_KNOBS = ("snapshot_epoch", "teacher_depth", "alpha", "temperature")
MIN_TRIALS = 16     # fewer students than this cannot split variance between knobs and seed noise
REPEATS = 5         # shuffles per knob and fold


@dataclass
class Importance:
    table: pd.DataFrame = field(default_factory=pd.DataFrame)   # knob, share (of the variance), std; by share
    r2: float = float("nan")      # held-out R^2 of all the knobs together
    n: int = 0                    # students used
    fixed: list = field(default_factory=list)    # knobs that do not vary in this sweep
    skipped: str | None = None    # why nothing was computed


def _depth(arch) -> float:
    m = re.search(r"(\d+)", str(arch)) if isinstance(arch, str) else None
    return float(m.group(1)) if m else 0.0


def knob_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """The knobs as numbers, one row per trial (CE-only rows: no teacher, so depth, snapshot, alpha and T are 0)."""
    out = pd.DataFrame(index=trials.index)
    out["snapshot_epoch"] = pd.to_numeric(trials.get("snapshot_epoch"), errors="coerce")
    out["teacher_depth"] = trials["teacher_arch"].astype("object").map(_depth) if "teacher_arch" in trials else 0.0
    for c in ("alpha", "temperature", "kd_epochs", "lr"):
        out[c] = pd.to_numeric(trials[c], errors="coerce") if c in trials else np.nan
    return out.astype(float).fillna(0.0)


def importance(trials: pd.DataFrame, metric: str = METRIC, min_trials: int = MIN_TRIALS) -> Importance:
    """The share of the variance in `metric` each knob explains, over the complete configs of `trials`."""
    done = stats.completed(trials)
    done = done[done[metric].notna()]
    if len(done) < min_trials:
        return Importance(n=len(done), skipped=(
            f"only {len(done)} students of complete configs (every seed finished); splitting the variance between "
            f"the knobs and seed noise needs at least {min_trials}"))
    x = knob_frame(done)
    kd = (x["kd_epochs"] > 0).to_numpy()
    # a teacher knob counts where it varies among KD students (KD vs CE-only is kd_epochs' part)
    varying = [k for k, _ in KNOBS if (x.loc[kd, k] if k in TEACHER_KNOBS else x[k]).nunique() > 1]
    words = dict(KNOBS)
    fixed = [words[k] for k, _ in KNOBS if k not in varying]
    if not varying:
        return Importance(n=len(done), fixed=fixed, skipped="no knob varies in this sweep (only seeds do)")
    if done[metric].nunique() < 2:
        return Importance(n=len(done), fixed=fixed, skipped=f"every student has the same {metric}")
    if "seed" in done and done["seed"].nunique() > 1 and done.groupby("seed")[metric].nunique().le(1).all():
        return Importance(n=len(done), fixed=fixed, skipped=f"within every seed, all students have the same {metric}")
    try:  # optional: results and report need no more than pandas, pyarrow, matplotlib and scipy
        from sklearn.ensemble import RandomForestRegressor
        from sklearn.inspection import permutation_importance
        from sklearn.model_selection import GroupKFold, KFold
    except ImportError:
        return Importance(n=len(done), fixed=fixed, skipped="scikit-learn is not installed (pip install scikit-learn)")

    seeds = done["seed"].astype("object").map(repr).to_numpy() if "seed" in done else np.zeros(len(done))
    y = done[metric].to_numpy(dtype=float)
    y = y - pd.Series(y).groupby(seeds).transform("mean").to_numpy()    # each seed's common offset is noise
    X = x[varying].to_numpy()
    n_seeds = len(set(seeds))
    folds = (GroupKFold(n_splits=min(n_seeds, 5)).split(X, y, seeds) if n_seeds > 1
             else KFold(n_splits=5, shuffle=True, random_state=0).split(X))
    # Pooled over the held-out folds: squared error of the forest, and its growth when a knob is shuffled.
    sse, growth = 0.0, np.zeros((len(varying), REPEATS))
    for train, test in folds:
        # leaves of at least 5 students: a config has only a few seeds, and a leaf per seed would fit noise
        forest = RandomForestRegressor(n_estimators=60, min_samples_leaf=5, random_state=0, n_jobs=1)
        forest.fit(X[train], y[train])
        sse += float(((forest.predict(X[test]) - y[test]) ** 2).sum())
        result = permutation_importance(forest, X[test], y[test], scoring="neg_mean_squared_error",
                                        n_repeats=REPEATS, random_state=0)
        growth += result.importances * len(test)       # mean squared error growth -> summed squared error
    total = float(((y - y.mean()) ** 2).sum())
    share = growth / 2 / total         # shuffling an additive effect adds twice its variance to the squared error
    table = pd.DataFrame({"knob": [words[k] for k in varying], "feature": varying,
                          "share": share.mean(axis=1), "std": share.std(axis=1)})
    table = table.sort_values("share", ascending=False, kind="stable").reset_index(drop=True)
    return Importance(table, 1 - sse / total, len(done), fixed)


def headline(result: Importance) -> str:
    """The section's text: what was measured and what it says."""
    if result.skipped:
        return f"Not computed: {result.skipped}."
    shares = ", ".join(f"{r.knob} {100 * r.share:.1f}%" for r in result.table.itertuples())
    if result.r2 <= 0:
        text = (f"Over {result.n} students of complete configs, the knobs do not predict held-out seeds better than "
                f"their mean (held-out R² {100 * result.r2:.0f}%, after each seed's common offset is taken out): no "
                f"knob stands out from seed noise. For the record, each knob's share as measured: {shares}.")
    else:
        top = result.table.iloc[0]["knob"]
        text = (f"Share of the variance in final validation accuracy each knob explains, on held-out seeds, over "
                f"{result.n} students of complete configs: {shares}. All the knobs together explain "
                f"{100 * result.r2:.1f}% of it (held-out R², after each seed's common offset is taken out); the "
                f"rest is seed-to-seed noise. {top[0].upper() + top[1:]} matters most.")
    if result.fixed:
        text += f" Fixed in this sweep: {', '.join(result.fixed)}."
    return text + (" Method: permutation importance (scikit-learn) of a random forest; seeds are noise, not a "
                   "knob, and never enter.")
