"""Statistics on the trials table: best configs, aggregation over seeds, and group comparisons.

Student-t quantiles and tail probabilities come from scipy.stats (checked against the usual t-table in
tests/test_analysis_stats.py).

Selection is always on validation accuracy; test accuracy is reported, never chosen on.
"""
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# Trial columns that are results or bookkeeping, never part of a config.
RESULT_COLUMNS = {
    "trial_id", "status", "method", "epochs_run", "stopped_by_asha", "final_val_acc", "final_test_acc",
    "best_val_acc", "best_epoch", "best_test_acc", "snapshot_val_acc", "snapshot_test_acc", "wall_seconds",
    "num_failures", "trial_dir", "soft_labels", "data_dir",
}
# Ordered so that tables read from the ESKD knobs outward.
KNOBS = ["teacher_arch", "teacher_hash", "snapshot_epoch", "kd_epochs", "alpha", "temperature"]
SEED = "seed"


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
# Aggregation over seeds
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Summary:
    n: int
    mean: float
    std: float        # sample standard deviation (ddof=1); NaN for one value
    sem: float
    ci_low: float     # Student-t confidence interval of the mean; NaN for one value
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summary(values, confidence: float = 0.95) -> Summary:
    """n, mean, std, standard error and the t confidence interval of the mean of `values` (NaNs dropped)."""
    v = np.asarray(pd.Series(values, dtype="float64").dropna(), dtype=float)
    n = len(v)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, math.nan)
    std = float(v.std(ddof=1))
    sem = std / math.sqrt(n)
    h = t_critical(n - 1, confidence) * sem
    return Summary(n, mean, std, sem, mean - h, mean + h)


def aggregate(df: pd.DataFrame, by, metric: str = "final_test_acc", confidence: float = 0.95) -> pd.DataFrame:
    """One row per group of `by` (NaN keys kept, e.g. the CE-only rows' blank teacher): n, mean, std, sem,
    ci_low, ci_high and ci_half of `metric` over the group's trials (usually its seeds)."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    if not by:
        groups = [((), df)]
    else:
        groups = df.groupby(by, dropna=False, observed=True, sort=True)
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        s = summary(g[metric], confidence)
        rows.append({**dict(zip(by, key)), "n": s.n, "mean": s.mean, "std": s.std, "sem": s.sem,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "ci_half": s.half_width})
    out = pd.DataFrame(rows, columns=[*by, "n", "mean", "std", "sem", "ci_low", "ci_high", "ci_half"])
    out["n"] = out["n"].astype("int64")
    for col in by:  # keep the input's dtypes (categories, Int64) on the keys
        if col in df:
            try:
                out[col] = out[col].astype(df[col].dtype)
            except (TypeError, ValueError):
                pass
    return out


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that ran all their epochs: TERMINATED and not stopped early by ASHA. Seed statistics use only
    these; an ASHA-stopped trial's accuracy is that of a shorter run."""
    return trials[(trials["status"] == "TERMINATED") & ~trials["stopped_by_asha"].astype(bool)]


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The columns that make a config: every config key that varies across trials, except the seed, plus the
    ESKD knobs (teacher, snapshot, kd_epochs, alpha, temperature) whenever present."""
    cols = []
    for c in trials.columns:
        if c in RESULT_COLUMNS or c == SEED:
            continue
        if c in KNOBS or trials[c].astype("object").map(repr).nunique() > 1:
            cols.append(c)
    return sorted(cols, key=lambda c: (KNOBS.index(c) if c in KNOBS else len(KNOBS), list(trials.columns).index(c)))


def best_configs(trials: pd.DataFrame, metric: str = "final_val_acc", report: str = "final_test_acc",
                 by=None, top: int = 5, min_seeds: int = 1) -> pd.DataFrame:
    """The best configs by the seed-mean of `metric` (a validation metric: never select on test), with the
    seed statistics of `report` beside it. `by` ranks within groups (e.g. by="snapshot_epoch" for the best
    config of every snapshot); `top` rows per group."""
    if metric.endswith("test_acc"):
        raise ValueError(f"select on a validation metric, not {metric}: test accuracy is reported, never tuned on")
    cfg = config_columns(trials)
    if trials.empty:
        return pd.DataFrame(columns=[*cfg, "n", metric, f"{report}_mean", f"{report}_std", f"{report}_ci_half"])
    sel = aggregate(trials, cfg, metric)
    rep = aggregate(trials, cfg, report)
    out = sel[[*cfg, "n"]].copy()
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
    """One row per teacher snapshot (plus one for the CE-only baseline): its best config by the seed-mean of
    `select_on` (validation), and the seed statistics of `metric` for that config. `configs` counts the configs
    the choice was made among; with a single alpha/T/kd config per snapshot this is a plain seed aggregate."""
    cols = ["teacher_arch", "teacher_hash", "snapshot_epoch", "configs", "kd_epochs", "alpha", "temperature",
            "n", "mean", "std", "ci_low", "ci_high", "ci_half", f"{select_on}_mean", "trial_ids"]
    if trials.empty:
        return pd.DataFrame(columns=cols)
    cfg = config_columns(trials)
    group = ["teacher_hash", "snapshot_epoch"]
    rows = []
    for key, g in trials.groupby(group, dropna=False, observed=True, sort=True):
        sel = aggregate(g, cfg, select_on)
        best = sel.sort_values("mean", ascending=False, kind="stable").iloc[0]
        mask = np.ones(len(g), dtype=bool)
        for c in cfg:
            v = best[c]
            mask &= (g[c].isna() if pd.isna(v) else (g[c] == v)).to_numpy(dtype=bool)
        chosen = g[mask]
        s = summary(chosen[metric], confidence)
        rows.append({"teacher_arch": chosen["teacher_arch"].iloc[0], "teacher_hash": key[0],
                     "snapshot_epoch": key[1], "configs": len(sel),
                     "kd_epochs": best.get("kd_epochs"), "alpha": best.get("alpha"),
                     "temperature": best.get("temperature"), "n": s.n, "mean": s.mean, "std": s.std,
                     "ci_low": s.ci_low, "ci_high": s.ci_high, "ci_half": s.half_width,
                     f"{select_on}_mean": best["mean"], "trial_ids": list(chosen["trial_id"])})
    out = pd.DataFrame(rows, columns=cols)
    for c in ("snapshot_epoch", "kd_epochs"):
        out[c] = out[c].astype("Int64")
    out["teacher_arch"] = out["teacher_arch"].astype("object")
    return out.sort_values(["teacher_arch", "teacher_hash", "snapshot_epoch"], na_position="first", kind="stable",
                           key=lambda col: col.map(natural_key) if col.name == "teacher_arch" else col
                           ).reset_index(drop=True)


def natural_key(value):
    """resnet8 < resnet14 < resnet18 (digits compared as numbers); blanks first."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(value)))


# ---------------------------------------------------------------------------------------------------------------
# Comparing two groups
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Group A vs group B on one metric: Welch's t-test and the t confidence interval of mean(A) - mean(B)."""
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
    verdict: str       # "exceeds seed noise" | "within seed noise" | "too few seeds"
    confidence: float = 0.95

    @property
    def exceeds_noise(self) -> bool:
        return self.verdict == "exceeds seed noise"

    @property
    def text(self) -> str:
        pts = lambda x: f"{100 * x:+.2f}"
        head = (f"{self.label_a} vs {self.label_b}: {100 * self.a.mean:.2f}% vs {100 * self.b.mean:.2f}% "
                f"{_metric_words(self.metric)} ({self.a.n} vs {self.b.n} seeds)")
        if self.verdict == "too few seeds":
            return (f"{head}; difference {pts(self.diff)} points, but with fewer than 2 seeds in a group the seed "
                    f"noise is unknown: not a finding.")
        ci = f"{int(round(100 * self.confidence))}% CI [{pts(self.ci_low)}, {pts(self.ci_high)}]"
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        if self.exceeds_noise:
            better = self.label_a if self.diff > 0 else self.label_b
            return (f"{head}; difference {pts(self.diff)} points, {ci}, {p} (Welch t-test): exceeds seed noise, "
                    f"{better} is better.")
        return (f"{head}; difference {pts(self.diff)} points, {ci}, {p} (Welch t-test): within seed noise, "
                f"not a finding.")


def _metric_words(metric: str) -> str:
    words = {"final_test_acc": "final test accuracy", "final_val_acc": "final validation accuracy",
             "best_test_acc": "test accuracy at the best-validation epoch",
             "best_val_acc": "best validation accuracy"}
    return words.get(metric, metric)


def compare(a, b, label_a: str = "A", label_b: str = "B", metric: str = "final_test_acc",
            confidence: float = 0.95) -> Comparison:
    """Compare two sets of per-seed values. The difference exceeds seed noise when the Welch confidence
    interval of mean(a) - mean(b) excludes 0 (equivalently, two-sided p < 1 - confidence)."""
    sa, sb = summary(a, confidence), summary(b, confidence)
    diff = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Comparison(label_a, label_b, metric, sa, sb, diff, math.nan, math.nan, math.nan, math.nan, math.nan,
                          "too few seeds", confidence)
    va, vb = sa.std ** 2 / sa.n, sb.std ** 2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0:  # no seed-to-seed variation at all in either group
        verdict = "within seed noise" if diff == 0 else "exceeds seed noise"
        return Comparison(label_a, label_b, metric, sa, sb, diff, diff, diff, math.copysign(math.inf, diff) if diff else 0.0,
                          math.inf, 1.0 if diff == 0 else 0.0, verdict, confidence)
    df = (va + vb) ** 2 / (va ** 2 / (sa.n - 1) + vb ** 2 / (sb.n - 1))
    t = diff / se
    h = t_critical(df, confidence) * se
    p = min(1.0, 2 * t_sf(abs(t), df))
    verdict = "exceeds seed noise" if (diff - h > 0 or diff + h < 0) else "within seed noise"
    return Comparison(label_a, label_b, metric, sa, sb, diff, diff - h, diff + h, t, df, p, verdict, confidence)


def compare_groups(trials: pd.DataFrame, column: str, a, b, metric: str = "final_test_acc",
                   where: dict | None = None, label_a: str | None = None, label_b: str | None = None,
                   confidence: float = 0.95) -> Comparison:
    """Compare the trials with trials[column] == a against those with == b (None selects the blank value,
    e.g. the CE-only baseline's snapshot_epoch), optionally within `where` ({column: value}), e.g.
    compare_groups(completed(t), "snapshot_epoch", 3, 6, where={"teacher_arch": "resnet18"})."""
    df = trials
    for col, v in (where or {}).items():
        df = df[df[col].isna()] if v is None else df[df[col] == v]
    pick = lambda v: df[df[column].isna()] if v is None else df[df[column] == v]
    return compare(pick(a)[metric], pick(b)[metric], label_a or f"{column}={a}", label_b or f"{column}={b}",
                   metric, confidence)


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
