"""Names in the user's terms: "ResNet-14 teacher, snapshot e2", "CE-only (no teacher)", "83.21%".

The one place that words a metric, formats an accuracy as a percentage and spells a KD config: the tables,
figures, findings and report all take their text from here."""
import math
import re

import numpy as np
import pandas as pd

CE_ONLY = "CE-only (no teacher)"
METRIC_NAMES = {
    "final_test_acc": "final test accuracy", "final_val_acc": "final validation accuracy",
    "best_test_acc": "test accuracy at the best-validation epoch", "best_val_acc": "best validation accuracy",
    "val_acc": "validation accuracy", "test_acc": "test accuracy", "train_acc": "training accuracy",
}


def arch_name(arch) -> str:
    """resnet14 -> ResNet-14 (other names unchanged)."""
    if is_blank(arch):
        return "?"
    m = re.fullmatch(r"resnet(\d+)", str(arch))
    return f"ResNet-{m.group(1)}" if m else str(arch)


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def is_blank(v) -> bool:
    """A missing value: None, pandas' NA or a float NaN (never a list or other container, so config values of
    any type can be asked)."""
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def percent(x, digits: int = 2, signed: bool = False, blank: str = "") -> str:
    """An accuracy (a fraction) in percent, without the sign: 0.8321 -> "83.21"; signed: +0.0043 -> "+0.43" (a
    difference in points); `blank` when missing. Table cells use it, their header says "%"."""
    return blank if is_blank(x) else f"{100 * float(x):{'+' if signed else ''}.{digits}f}"


def pct(x, digits: int = 2) -> str:
    """0.8321 -> "83.21%"; "n/a" when missing."""
    return "n/a" if is_blank(x) else f"{percent(x, digits)}%"


def mean_ci(mean, half) -> str:
    """"83.21 ± 1.20" (percent, the mean and the half-width of its CI); without the CI when it is missing."""
    if is_blank(mean):
        return ""
    return percent(mean) + ("" if is_blank(half) else f" ± {percent(half)}")


def teacher_names(teachers: pd.DataFrame, key: str = "teacher_hash") -> dict:
    """teacher_hash -> "ResNet-14", adding what tells teachers of the same arch apart (width, seed, lr, epochs).
    key="teacher_config" names the teacher configs instead, their seeds pooled: "ResNet-14 (teacher seeds 0, 1)"."""
    if teachers.empty or key not in teachers:
        return {}
    per = teachers.drop_duplicates(key).set_index(key)
    seeds = teachers.groupby(key)["seed"].agg(lambda s: sorted(int(v) for v in s.dropna().unique()))
    fields = [("width", "width"), ("seed", "seed"), ("lr", "lr"), ("teacher_epochs", "epochs")]
    if key != "teacher_hash":
        fields.remove(("seed", "seed"))
    out = {}
    for h, row in per.iterrows():
        same = per[per["arch"] == row["arch"]]
        extra = []
        for col, word in fields:
            if col in same and same[col].nunique(dropna=False) > 1:
                extra.append(f"{word} {row[col]:g}" if isinstance(row[col], float) else f"{word} {row[col]}")
        if key != "teacher_hash" and len(seeds[h]) > 1:
            extra.append(f"teacher seeds {', '.join(map(str, seeds[h]))}")
        out[h] = arch_name(row["arch"]) + (f" ({', '.join(extra)})" if extra else "")
    return out


def _teacher_id(row):
    """The row's teacher group (teacher_config, its seeds pooled) or, lacking it, its teacher_hash; None if blank."""
    for key in ("teacher_config", "teacher_hash"):
        v = row.get(key)
        if not is_blank(v):
            return v
    return None


def teacher_name(trial_or_row, names: dict) -> str:
    h = _teacher_id(trial_or_row)
    if h is None:
        return CE_ONLY
    return names.get(h) or names.get(trial_or_row.get("teacher_hash")) or arch_name(trial_or_row.get("teacher_arch"))


def snapshot_label(row, names: dict) -> str:
    """"ResNet-14 teacher, snapshot e2" for a KD row, "CE-only (no teacher)" for the baseline."""
    if _teacher_id(row) is None:
        return CE_ONLY
    return f"{teacher_name(row, names)} teacher, snapshot e{int(row['snapshot_epoch'])}"


def kd_text(kd_epochs) -> str:
    """"KD 5 epochs": the length of a student's KD phase."""
    k = int(kd_epochs)
    return f"KD {k} epoch{'s' if k != 1 else ''}"


def knob_text(row) -> str:
    """"alpha 0.9, T 4, KD 5 epochs" (what a KD config sets); "" for CE-only."""
    kd = row.get("kd_epochs")
    if is_blank(kd) or int(kd) == 0:
        return ""
    return f"alpha {row['alpha']:g}, T {row['temperature']:g}, {kd_text(kd)}"


def asha_stopped(epochs_run) -> str:
    """"config stopped by ASHA for some or all seeds (each at its last epoch: 1-3 epochs)": the legend entry of
    the students left out because ASHA stopped a seed of their config, drawn at the accuracy of their last epoch."""
    runs = sorted({int(e) for e in epochs_run})
    after = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    return (f"config stopped by ASHA for some or all seeds (each at its last epoch: {after} "
            f"epoch{'s' if runs[-1] != 1 else ''})")
