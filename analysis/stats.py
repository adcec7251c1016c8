"""Statistics on the trials table: best configs, aggregation over seeds, and group comparisons.

The unit of replication is the seed, never the trial:

- A *config* is every config key of a trial except its seeds. The teacher enters as `teacher_config`, the teacher
  config without its seed, so that the students of several teacher seeds pool into one group.
- Its *replicates* are its seeds: the student seed, and the teacher seed too when the sweep varies it. Every CI
  says which (`ci_covers`). Trials that share a seed within a group (several configs pooled, repeated samples) are
  averaged into one value per seed.
- Only *complete* configs enter a statistic: those whose every seed ran all its epochs (TERMINATED, not stopped
  by ASHA). ASHA stops single seeds, and the survivors of a partly stopped config are the seeds that looked good
  at the rung: their mean is biased upwards. Such configs are flagged (`trials.config_complete` is False) and left
  out; they are never ranked against complete ones.
- Two groups with the same seeds are compared with a paired t-test on the per-seed differences (the statistic of
  scipy.stats.ttest_rel), other pairs with Welch's t-test.
- A seed-to-seed variance is never taken below the binomial variance p(1 - p) / N of an accuracy measured on N
  images (`trials.val_images`, `trials.test_images`). Where N is unknown, a comparison with no seed-to-seed
  variation at all is "undetermined", never significant.

Selection is always on validation accuracy; test accuracy is reported, never chosen on.
"""
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from tune_eskd.errors import UsageError

from .labels import is_blank, metric_name, pct, percent

# Trial columns that are results or bookkeeping, never part of a config.
RESULT_COLUMNS = {
    "trial_id", "status", "method", "epochs_run", "stopped_by_asha", "config_complete", "final_val_acc",
    "final_test_acc", "best_val_acc", "best_epoch", "best_test_acc", "snapshot_val_acc", "snapshot_test_acc",
    "wall_seconds", "num_failures", "trial_dir", "soft_labels", "data_dir", "val_images", "test_images",
}
SEED, TEACHER_SEED = "seed", "teacher_seed"
# What the report and the figures state (test accuracy), and what picks a config among several (never test).
METRIC, SELECT_ON = "final_test_acc", "final_val_acc"
# Ordered so that tables read from the ESKD knobs outward. teacher_hash stands in for teacher_config in frames
# that lack it (teacher_hash names one teacher seed; teacher_config pools them).
KNOBS = ["teacher_arch", "teacher_config", "teacher_hash", "snapshot_epoch", "kd_epochs", "alpha", "temperature"]


# ---------------------------------------------------------------------------------------------------------------
# Student t distribution
# ---------------------------------------------------------------------------------------------------------------

def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom (df may be fractional, as in Welch's test)."""
    return float(scipy_stats.t.sf(t, df))


def t_critical(df: float, confidence: float = 0.95) -> float:
    """The two-sided critical value: P(|T| <= t) = confidence. t_critical(2) = 4.303, t_critical(10) = 2.228."""
    if not df > 0:
        return math.nan
    return float(scipy_stats.t.ppf(1 - (1 - confidence) / 2, df))


# ---------------------------------------------------------------------------------------------------------------
# Configs, seeds and completeness
# ---------------------------------------------------------------------------------------------------------------

def _require(trials: pd.DataFrame, *cols: str) -> None:
    missing = [c for c in cols if c not in trials]
    if missing:
        raise UsageError(f"the trials lack the column(s) {', '.join(missing)}: statistics count seeds, not rows; "
                         f"pass analysis.load(EXPERIMENT).trials or a filter of it")


def teacher_column(trials: pd.DataFrame) -> str:
    """The column that names a teacher group: teacher_config (teacher seeds pooled) where the table has it."""
    return "teacher_config" if "teacher_config" in trials else "teacher_hash"


def replicate_columns(trials: pd.DataFrame) -> list[str]:
    """The seeds that replicate a config: the student seed, and the teacher seed when the trials vary it."""
    _require(trials, SEED)
    if TEACHER_SEED in trials and trials[TEACHER_SEED].nunique(dropna=True) > 1:
        return [TEACHER_SEED, SEED]
    return [SEED]


def ci_covers(trials: pd.DataFrame) -> str:
    """Which seeds a confidence interval over these trials covers, in words."""
    student = SEED in trials and trials[SEED].nunique(dropna=True) > 1
    teacher = TEACHER_SEED in trials and trials[TEACHER_SEED].nunique(dropna=True) > 1
    return {(True, True): "teacher and student seeds", (False, True): "teacher seeds"}.get((student, teacher),
                                                                                           "student seeds")


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The columns that make a config: every config key that varies across trials, except the seeds, plus the
    ESKD knobs (teacher, snapshot, kd_epochs, alpha, temperature) whenever present."""
    skip = set(RESULT_COLUMNS) | {SEED, TEACHER_SEED}
    if "teacher_config" in trials:
        skip.add("teacher_hash")
    cols = []
    for c in trials.columns:
        if c in skip:
            continue
        if c in KNOBS or trials[c].astype("object").map(repr).nunique() > 1:
            cols.append(c)
    return sorted(cols, key=lambda c: (KNOBS.index(c) if c in KNOBS else len(KNOBS), list(trials.columns).index(c)))


def config_key(trials: pd.DataFrame, cols: list[str] | None = None) -> pd.Series:
    """One hashable key per trial naming its config (blank values compare equal)."""
    cols = config_columns(trials) if cols is None else cols
    values = trials[cols].astype("object").to_numpy() if cols else np.empty((len(trials), 0), dtype=object)
    return pd.Series([repr(tuple(None if is_blank(v) else v for v in row)) for row in values], index=trials.index,
                     dtype="object")


def finished(trials: pd.DataFrame) -> pd.Series:
    """Per trial: it ran all its epochs (TERMINATED, not stopped early by ASHA). A frame without these columns
    is taken to hold finished results only."""
    ok = pd.Series(True, index=trials.index)
    if "status" in trials:
        ok &= (trials["status"].astype("object") == "TERMINATED").to_numpy()
    if "stopped_by_asha" in trials:
        ok &= ~trials["stopped_by_asha"].fillna(False).astype(bool).to_numpy()
    return ok


def config_complete(trials: pd.DataFrame) -> pd.Series:
    """Per trial: every seed of its config ran all its epochs. The trials table carries this as a column,
    judged over the whole sweep (a filtered table keeps the sweep's verdict); other frames are judged here."""
    if "config_complete" in trials:
        return trials["config_complete"].fillna(False).astype(bool)
    return finished(trials).groupby(config_key(trials), sort=False).transform("all").astype(bool)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of complete configs: every statistic uses only these (see the module docstring)."""
    return trials[(config_complete(trials) & finished(trials)).to_numpy()]


def partial_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """The configs left out of every statistic, one row each: its config columns, `seeds` (trials it has),
    `finished` (seeds that ran all epochs), `stopped_by_asha` and `unfinished` (errored, running, pending)."""
    cfg = config_columns(trials)
    bad = trials[~config_complete(trials).to_numpy()]
    cols = [*cfg, "seeds", "finished", "stopped_by_asha", "unfinished"]
    if bad.empty:
        return pd.DataFrame(columns=cols)
    fin = finished(bad)
    stopped = bad["stopped_by_asha"].fillna(False).astype(bool) if "stopped_by_asha" in bad else fin & False
    rows = []
    for _, idx in bad.groupby(config_key(bad, cfg), sort=False).groups.items():
        first = bad.loc[idx[0]]
        rows.append({**{c: first[c] for c in cfg}, "seeds": len(idx), "finished": int(fin[idx].sum()),
                     "stopped_by_asha": int(stopped[idx].sum()),
                     "unfinished": int(len(idx) - fin[idx].sum() - stopped[idx].sum())})
    return pd.DataFrame(rows, columns=cols)


def seed_values(trials: pd.DataFrame, metric: str) -> pd.Series:
    """One value of `metric` per seed, indexed by the seed (or by (teacher_seed, seed) when teacher seeds vary):
    the mean over the trials of that seed (several configs of a pooled group, or repeated samples)."""
    _require(trials, metric)
    rep = replicate_columns(trials)
    rows = trials[rep + [metric]].dropna(subset=[metric])
    return rows.groupby(rep if len(rep) > 1 else rep[0], dropna=False, sort=True)[metric].mean()


def eval_images(trials: pd.DataFrame, metric: str) -> int | None:
    """N, the number of images `metric` is measured on (trials.val_images / test_images); None when unknown."""
    col = "test_images" if "test" in metric else "val_images" if "val" in metric else None
    if col is None or col not in trials:
        return None
    n = pd.to_numeric(trials[col], errors="coerce").dropna()
    return int(n.min()) if len(n) else None


def binomial_floor(p: float, n_images: int | None) -> float:
    """The variance of an accuracy p measured on n_images images, p (1 - p) / N; 0 when N is unknown."""
    if not n_images or is_blank(p):
        return 0.0
    return float(p * (1 - p) / n_images)


# ---------------------------------------------------------------------------------------------------------------
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Summary:
    n: int
    mean: float
    std: float        # sample standard deviation over seeds (ddof=1), as observed; NaN for one value
    sem: float        # standard error of the mean, from the floored variance
    ci_low: float     # Student-t confidence interval of the mean; NaN for one value
    ci_high: float
    floored: bool = False   # the binomial floor, not the seeds, set the variance

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summary(values, confidence: float = 0.95, n_images: int | None = None) -> Summary:
    """n, mean, std, standard error and the t confidence interval of the mean of `values` (NaNs dropped). With
    n_images, the variance is at least the binomial variance of an accuracy measured on that many images."""
    v = np.asarray(pd.Series(values, dtype="float64").dropna(), dtype=float)
    n = len(v)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    floor = binomial_floor(mean, n_images)
    var = max(std ** 2, floor)
    sem = math.sqrt(var / n)
    h = t_critical(n - 1, confidence) * sem
    return Summary(n, mean, std, sem, mean - h, mean + h, floor > std ** 2)


def aggregate(df: pd.DataFrame, by, metric: str = "final_test_acc", confidence: float = 0.95) -> pd.DataFrame:
    """One row per group of `by` (NaN keys kept, e.g. the CE-only rows' blank teacher), over the complete
    configs only: `configs` in the group, n seeds, mean, std, sem, ci_low, ci_high and ci_half of `metric` over
    the seeds (each seed's value is its mean over the group's configs), and `covers` (which seeds the CI covers)."""
    by = [by] if isinstance(by, str) else list(by)
    cols = [*by, "configs", "n", "mean", "std", "sem", "ci_low", "ci_high", "ci_half", "covers"]
    replicate_columns(df)
    cfg = config_columns(df)
    n_images = eval_images(df, metric)
    done = completed(df)
    groups = [((), done)] if not by else done.groupby(by, dropna=False, observed=True, sort=True)
    rows = []
    for key, g in groups:
        if g.empty:
            continue
        key = key if isinstance(key, tuple) else (key,)
        s = summary(seed_values(g, metric), confidence, n_images)
        rows.append({**dict(zip(by, key)), "configs": config_key(g, cfg).nunique(), "n": s.n, "mean": s.mean,
                     "std": s.std, "sem": s.sem, "ci_low": s.ci_low, "ci_high": s.ci_high, "ci_half": s.half_width,
                     "covers": ci_covers(g)})
    out = pd.DataFrame(rows, columns=cols)
    out["n"] = out["n"].astype("int64")
    out["configs"] = out["configs"].astype("int64")
    for col in by:  # keep the input's dtypes (categories, Int64) on the keys
        if col in df:
            try:
                out[col] = out[col].astype(df[col].dtype)
            except (TypeError, ValueError):
                pass
    return out


def best_configs(trials: pd.DataFrame, metric: str = "final_val_acc", report: str = "final_test_acc",
                 by=None, top: int = 5, min_seeds: int = 1) -> pd.DataFrame:
    """The best complete configs by the seed-mean of `metric` (a validation metric: never select on test), with
    the seed statistics of `report` beside it. Configs that ASHA stopped for some of their seeds (or that did not
    finish) are left out (see partial_configs): a survivor's accuracy is never ranked against full seed means.
    `by` ranks within groups (e.g. by="snapshot_epoch" for the best config of every snapshot); `top` rows per
    group."""
    if metric.endswith("test_acc"):
        raise ValueError(f"select on a validation metric, not {metric}: test accuracy is reported, never tuned on")
    cfg = config_columns(trials)
    sel = aggregate(trials, cfg, metric)
    rep = aggregate(trials, cfg, report)
    out = sel[[*cfg, "n", "covers"]].copy()
    out[metric] = sel["mean"].to_numpy()
    out[f"{report}_mean"] = rep["mean"].to_numpy()
    out[f"{report}_std"] = rep["std"].to_numpy()
    out[f"{report}_ci_half"] = rep["ci_half"].to_numpy()
    out = out[out["n"] >= min_seeds].sort_values(metric, ascending=False, kind="stable")
    if by is not None:
        by = [by] if isinstance(by, str) else list(by)
        out = out.groupby(by, dropna=False, observed=True, sort=False).head(top)
        out = out.sort_values([*by, metric], ascending=[True] * len(by) + [False], kind="stable", na_position="first")
    else:
        out = out.head(top)
    return out.reset_index(drop=True)


def snapshot_summary(trials: pd.DataFrame, metric: str = "final_test_acc", select_on: str = "final_val_acc",
                     confidence: float = 0.95) -> pd.DataFrame:
    """One row per teacher snapshot (teacher seeds pooled; plus one for the CE-only baseline), over the complete
    configs: its best config by the seed-mean of `select_on` (validation), and the seed statistics of `metric`
    for that config. `configs` counts the configs the choice was made among; `values` holds the per-seed values
    (indexed by seed, for paired comparisons); `covers` says which seeds the CI covers."""
    tcol = teacher_column(trials)
    cols = ["teacher_arch", "teacher_config", "snapshot_epoch", "configs", "kd_epochs", "alpha", "temperature",
            "n", "mean", "std", "ci_low", "ci_high", "ci_half", "covers", f"{select_on}_mean", "trial_ids", "values"]
    cfg = config_columns(trials)
    done = completed(trials)
    done = done[done[metric].notna()]
    if done.empty:
        return pd.DataFrame(columns=cols)
    n_images = eval_images(trials, metric)
    rows = []
    for key, g in done.groupby([tcol, "snapshot_epoch"], dropna=False, observed=True, sort=True):
        sel = aggregate(g, cfg, select_on)
        best = sel.sort_values("mean", ascending=False, kind="stable").iloc[0]
        chosen = g[(config_key(g, cfg) == config_key(sel.loc[[best.name]], cfg).iloc[0]).to_numpy()]
        values = seed_values(chosen, metric)
        s = summary(values, confidence, n_images)
        rows.append({"teacher_arch": chosen["teacher_arch"].iloc[0], "teacher_config": key[0],
                     "snapshot_epoch": key[1], "configs": len(sel),
                     "kd_epochs": best.get("kd_epochs"), "alpha": best.get("alpha"),
                     "temperature": best.get("temperature"), "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "ci_half": s.half_width, "covers": ci_covers(chosen),
                     f"{select_on}_mean": best["mean"], "trial_ids": list(chosen["trial_id"]), "values": values})
    out = pd.DataFrame(rows, columns=cols)
    for c in ("snapshot_epoch", "kd_epochs"):
        out[c] = out[c].astype("Int64")
    out["teacher_arch"] = out["teacher_arch"].astype("object")
    return out.sort_values(["teacher_arch", "teacher_config", "snapshot_epoch"], na_position="first", kind="stable",
                           key=lambda col: col.map(natural_key) if col.name == "teacher_arch" else col
                           ).reset_index(drop=True)


def natural_key(value):
    """resnet8 < resnet14 < resnet18 (digits compared as numbers); blanks first."""
    if is_blank(value):
        return ()
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(value)))


# ---------------------------------------------------------------------------------------------------------------
# Comparing two groups
# ---------------------------------------------------------------------------------------------------------------

UNDETERMINED = "undetermined"


@dataclass
class Comparison:
    """Group A vs group B on one metric: a paired or Welch t-test and the t confidence interval of
    mean(A) - mean(B)."""
    label_a: str
    label_b: str
    metric: str
    a: Summary
    b: Summary
    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float
    verdict: str       # "exceeds seed noise" | "within seed noise" | "too few seeds" | "undetermined"
    confidence: float = 0.95
    test: str = ""     # "paired t-test" | "Welch t-test" ("" when no test was made)
    floored: bool = False   # the binomial floor set the variance
    covers: str = "seeds"   # which seeds the CI covers, e.g. "student seeds" ("A's / B's" when they differ)
    note: str = ""          # what was left out or averaged, in words

    @property
    def exceeds_noise(self) -> bool:
        return self.verdict == "exceeds seed noise"

    @property
    def paired(self) -> bool:
        return self.test == "paired t-test"

    @property
    def text(self) -> str:
        pts = lambda x: percent(x, signed=True, blank="n/a")
        ca, _, cb = self.covers.partition(" / ")
        seeds = f"{self.a.n} vs {self.b.n} {ca}" if not cb else f"{self.a.n} {ca} vs {self.b.n} {cb}"
        head = (f"{self.label_a} vs {self.label_b}: {pct(self.a.mean)} vs {pct(self.b.mean)} "
                f"{metric_name(self.metric)} ({seeds})")
        note = f" {self.note}" if self.note else ""
        if self.verdict == "too few seeds":
            return (f"{head}; difference {pts(self.diff)} points, but with fewer than 2 seeds in a group the seed "
                    f"noise is unknown: not a finding.{note}")
        if self.verdict == UNDETERMINED:
            return (f"{head}; difference {pts(self.diff)} points, but the seeds do not vary at all and the number of "
                    f"evaluation images is unknown, so the noise cannot be estimated: undetermined, not a "
                    f"finding.{note}")
        ci = f"{int(round(100 * self.confidence))}% CI [{pts(self.ci_low)}, {pts(self.ci_high)}] over {self.covers}"
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        test = self.test + (", variance floored at the binomial variance of the evaluation set" if self.floored
                            else "")
        if self.exceeds_noise:
            better = self.label_a if self.diff > 0 else self.label_b
            return (f"{head}; difference {pts(self.diff)} points, {ci}, {p} ({test}): exceeds seed noise, "
                    f"{better} is better.{note}")
        return (f"{head}; difference {pts(self.diff)} points, {ci}, {p} ({test}): within seed noise, "
                f"not a finding.{note}")


def _as_series(values) -> pd.Series:
    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=float))
    return s.astype("float64").dropna()


def compare(a, b, label_a: str = "A", label_b: str = "B", metric: str = "final_test_acc",
            confidence: float = 0.95, n_images: int | None = None, covers: str = "seeds",
            note: str = "") -> Comparison:
    """Compare two sets of per-seed values. When both are pandas Series indexed by the same seeds (as
    seed_values returns them), the test is paired: a t-test on the per-seed differences (scipy's ttest_rel
    statistic); otherwise Welch's t-test. The difference exceeds seed noise when the confidence interval of
    mean(a) - mean(b) excludes 0 (equivalently, two-sided p < 1 - confidence). With n_images (N), each variance is
    at least the binomial variance of an accuracy measured on N images; without it, groups with no seed-to-seed
    variation at all give "undetermined"."""
    sa_values, sb_values = _as_series(a), _as_series(b)
    sa, sb = summary(sa_values, confidence), summary(sb_values, confidence)
    diff = sa.mean - sb.mean
    result = lambda *rest, **kw: Comparison(label_a, label_b, metric, sa, sb, diff, *rest, confidence=confidence,
                                            covers=covers, note=note, **kw)
    if sa.n < 2 or sb.n < 2:
        return result(math.nan, math.nan, math.nan, math.nan, math.nan, "too few seeds")
    floor_a, floor_b = binomial_floor(sa.mean, n_images), binomial_floor(sb.mean, n_images)
    paired = (isinstance(a, pd.Series) and isinstance(b, pd.Series) and sa_values.index.is_unique
              and set(sa_values.index) == set(sb_values.index))
    if paired:
        d = sa_values - sb_values.reindex(sa_values.index)
        observed = float(d.var(ddof=1))
        var = max(observed, floor_a + floor_b)
        se, df, test = math.sqrt(var / len(d)), len(d) - 1, "paired t-test"
    else:
        va, vb = max(sa.std ** 2, floor_a) / sa.n, max(sb.std ** 2, floor_b) / sb.n
        se, test = math.sqrt(va + vb), "Welch t-test"
        df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1)) if se > 0 else math.nan
    floored = var > observed if paired else (floor_a > sa.std ** 2 or floor_b > sb.std ** 2)
    if se == 0:  # no seed-to-seed variation and no image count to floor it with
        return result(math.nan, math.nan, math.nan, math.nan, math.nan, UNDETERMINED, test=test)
    t = diff / se
    h = t_critical(df, confidence) * se
    p = min(1.0, 2 * t_sf(abs(t), df))
    verdict = "exceeds seed noise" if (diff - h > 0 or diff + h < 0) else "within seed noise"
    return result(diff - h, diff + h, t, df, p, verdict, test=test, floored=floored)


def compare_groups(trials: pd.DataFrame, column: str, a, b, metric: str = "final_test_acc",
                   where: dict | None = None, label_a: str | None = None, label_b: str | None = None,
                   confidence: float = 0.95) -> Comparison:
    """Compare the trials with trials[column] == a against those with == b (None selects the blank value,
    e.g. the CE-only baseline's snapshot_epoch), optionally within `where` ({column: value}), e.g.
    compare_groups(t.trials, "snapshot_epoch", 3, 6, where={"teacher_arch": "resnet18"}).

    Counts seeds, never trials: only complete configs enter (see completed); the configs of the two groups are
    matched on every other config column whose values they share (a config without its match is left out), and
    each seed's value is its mean over the group's configs. Same seeds on both sides: paired t-test."""
    _require(trials, column, metric)
    df = trials.assign(config_complete=config_complete(trials).to_numpy())
    for col, v in (where or {}).items():
        _require(df, col)
        df = df[df[col].isna()] if v is None else df[df[col] == v]
    pick = lambda v: df[df[column].isna()] if v is None else df[df[column] == v]
    ga, gb = pick(a), pick(b)
    label_a, label_b = label_a or f"{column}={a}", label_b or f"{column}={b}"
    for value, g in ((a, ga), (b, gb)):
        if g.empty:
            raise UsageError(f"no trial has {column} == {value!r}" + (f" within {where}" if where else "")
                             + f": values there are {sorted(df[column].dropna().unique().tolist())}")
    cfg = [c for c in config_columns(trials) if c != column]
    done_a, done_b = completed(ga), completed(gb)
    for value, g in ((a, done_a), (b, done_b)):
        if g.empty:
            raise UsageError(f"no config with {column} == {value!r} has all its seeds finished (ASHA stopped or "
                             f"errors cut some): statistics use complete configs only; stats.partial_configs lists "
                             f"the others")
    left = len(ga) - len(done_a) + len(gb) - len(done_b)
    # match on the config columns both groups share values of (e.g. the teacher, when comparing snapshots)
    shared = [c for c in cfg if set(config_key(done_a, [c])) & set(config_key(done_b, [c]))]
    if shared:
        ka, kb = config_key(done_a, shared), config_key(done_b, shared)
        both = set(ka) & set(kb)
        unmatched = int((~ka.isin(both)).sum() + (~kb.isin(both)).sum())
        done_a, done_b = done_a[ka.isin(both).to_numpy()], done_b[kb.isin(both).to_numpy()]
    else:
        unmatched = 0
    n_cfg = (config_key(done_a, cfg).nunique(), config_key(done_b, cfg).nunique())
    notes = []
    if max(n_cfg) > 1:
        notes.append(f"Each seed's value is the mean over its group's configs ({n_cfg[0]} vs {n_cfg[1]}"
                     + (f", matched on {', '.join(shared)}" if shared else "") + ").")
    if left:
        notes.append(f"{left} trials of configs that not every seed finished (ASHA stops, errors) are left out.")
    if unmatched:
        notes.append(f"{unmatched} trials without a matching config in the other group are left out.")
    both_done = pd.concat([done_a, done_b])
    covers = ci_covers(both_done) if len(both_done) else "seeds"
    values_a = seed_values(done_a, metric) if len(done_a) else pd.Series(dtype=float)
    values_b = seed_values(done_b, metric) if len(done_b) else pd.Series(dtype=float)
    return compare(values_a, values_b, label_a, label_b, metric, confidence, eval_images(trials, metric), covers,
                   " ".join(notes))


def holm(p_values, alpha: float = 0.05) -> list[bool]:
    """Holm-Bonferroni: which of several p-values stay significant at family-wise error rate `alpha`."""
    p = list(p_values)
    order = sorted(range(len(p)), key=lambda i: p[i])
    keep = [False] * len(p)
    m = len(p)
    for rank, i in enumerate(order):
        if math.isnan(p[i]) or p[i] > alpha / (m - rank):
            break
        keep[i] = True
    return keep
