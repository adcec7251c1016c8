"""Tables for people: the display frames `results` prints and the report shows, and their markdown."""
import pandas as pd

from . import stats
from .labels import (CE_ONLY, arch_name, is_blank, knob_text, mean_ci, metric_name, percent, snapshot_label,
                     teacher_names)


def cell(v) -> str:
    """A table cell's text: blank for a missing value, 4 significant digits for a float."""
    if is_blank(v):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def status_line(trials: pd.DataFrame) -> str:
    counts = trials["status"].astype("object").value_counts()
    parts = [f"{int(v)} {str(k).lower()}" for k, v in counts.items() if v]
    stopped = int(trials["stopped_by_asha"].sum())
    extra = f" ({stopped} of them stopped early by ASHA)" if stopped else ""
    return f"{len(trials)} student trials: {', '.join(parts) or 'none yet'}{extra}"


def partial_line(trials: pd.DataFrame) -> str:
    """"5 of 9 configs are left out ...": the configs not every seed of which finished, in one line ("" if none)."""
    partial = stats.partial_configs(trials)
    if partial.empty:
        return ""
    total = stats.config_key(trials).nunique()
    asha = int((partial["stopped_by_asha"] > 0).sum())
    return (f"{len(partial)} of {total} configs are left out of the rankings and comparisons: not all their seeds ran "
            f"all epochs ({asha} of them stopped by ASHA for some or all seeds; the survivors' mean would be biased "
            f"up). The trials table flags them (config_complete is False).")


def side_by_side(tables, trials: pd.DataFrame, metric: str = "final_test_acc",
                 select_on: str = "final_val_acc") -> pd.DataFrame:
    """The per-snapshot table of each experiment, one column group per experiment (blank where it has no complete
    config), rows matched by snapshot."""
    merged = None
    keep = ["config (chosen on validation)", "seeds", f"{metric_name(metric)} % (mean ± 95% CI)", "CI over"]
    for name in tables.sweeps:
        t = snapshot_table(tables, trials[trials["experiment"] == name], metric, select_on)
        t = t if len(t) else pd.DataFrame(columns=["students of", *keep])
        t = t[["students of", *keep]].rename(columns={c: f"{name}: {c}" for c in keep})
        merged = t if merged is None else merged.merge(t, on="students of", how="outer", sort=False)
    return merged.fillna("") if merged is not None else pd.DataFrame()


def top_configs_per_experiment(tables, trials: pd.DataFrame, metric: str = "final_val_acc",
                                report: str = "final_test_acc", top: int = 10) -> pd.DataFrame:
    """top_configs of each experiment loaded together, one after the other, with an `experiment` column."""
    parts = [top_configs(tables, part, metric, report, top).assign(experiment=name)
             for name, part in trials.groupby("experiment", sort=False) if len(part)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out[["experiment", *[c for c in out.columns if c != "experiment"]]] if len(out) else out


def top_configs(tables, trials: pd.DataFrame, metric: str = "final_val_acc", report: str = "final_test_acc",
                top: int = 10) -> pd.DataFrame:
    """The best complete configs by the seed-mean of a validation metric, with test accuracy ± 95% CI
    half-width and the seeds that CI covers."""
    best = stats.best_configs(trials, metric, report, top=top)
    names = teacher_names(tables.teachers, "teacher_config")
    cfg = [c for c in stats.config_columns(trials) if c not in stats.KNOBS]
    rows = []
    for i, r in best.iterrows():
        row = {"rank": i + 1, "teacher snapshot": snapshot_label(r, names),
               "KD epochs": cell(r.get("kd_epochs")), "alpha": cell(r.get("alpha")),
               "T": cell(r.get("temperature"))}
        for c in cfg:
            row[c] = arch_name(r[c]) if c.endswith("_arch") else cell(r[c])
        row["seeds"] = int(r["n"])
        row[f"{metric_name(metric)} %"] = percent(r[metric])
        row[f"{metric_name(report)} % (± 95% CI)"] = mean_ci(r[f"{report}_mean"], r[f"{report}_ci_half"])
        row["CI over"] = r["covers"]
        rows.append(row)
    return pd.DataFrame(rows)


def snapshot_table(tables, trials: pd.DataFrame, metric: str = "final_test_acc",
                   select_on: str = "final_val_acc") -> pd.DataFrame:
    summ = stats.snapshot_summary(trials, metric, select_on)
    names = teacher_names(tables.teachers, "teacher_config")
    # a pooled teacher's snapshot accuracy: the mean over its teacher seeds
    snaps = tables.teachers.groupby(["teacher_config", "snapshot_epoch"])["test_acc"].mean() \
        if "teacher_config" in tables.teachers else pd.Series(dtype=float)
    rows = []
    for _, r in summ.iterrows():
        kd = pd.notna(r["teacher_config"])
        key = (r["teacher_config"], r["snapshot_epoch"]) if kd else None
        teacher_acc = snaps.get(key) if kd else None
        rows.append({
            "students of": snapshot_label(r, names) if kd else CE_ONLY,
            "teacher test acc %": percent(teacher_acc),
            "config (chosen on validation)": knob_text(r) + (f" (best of {int(r['configs'])})" if r["configs"] > 1
                                                             else ""),
            "seeds": int(r["n"]),
            f"{metric_name(select_on)} %": percent(r[f"{select_on}_mean"]),
            f"{metric_name(metric)} % (mean ± 95% CI)": mean_ci(r["mean"], r["ci_half"]),
            "seed std (points)": percent(r["std"]),
            "CI over": r["covers"],
        })
    return pd.DataFrame(rows)


def teachers_table(tables) -> pd.DataFrame:
    t = tables.teachers
    names = teacher_names(t)
    rows = []
    for _, r in t.iterrows():
        row = {"teacher": names.get(r["teacher_hash"], arch_name(r["arch"])), "hash": r["teacher_hash"],
               "snapshot": f"e{int(r['snapshot_epoch'])} of {cell(r['teacher_epochs'])}",
               "val acc %": percent(r["val_acc"]), "test acc %": percent(r["test_acc"])}
        for c in t.columns:
            if c.startswith("max_prob_T"):
                row[f"mean max prob T={c[10:].replace('_', '.')}"] = cell(r[c])
        for c in t.columns:
            if c.startswith("entropy_T"):
                row[f"mean entropy T={c[9:].replace('_', '.')} (nats)"] = cell(r[c])
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame, max_rows: int | None = None) -> str:
    if df.empty:
        return "_(no rows)_"
    shown = df if max_rows is None else df.head(max_rows)
    cols = [str(c) for c in shown.columns]
    esc = lambda s: cell(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    if max_rows is not None and len(df) > max_rows:
        lines.append(f"\n_... {len(df) - max_rows} more rows_")
    return "\n".join(lines)
