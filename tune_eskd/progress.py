"""How a trial is described on the console and in `tune-eskd status`: the keys that tell a sweep's trials apart.
(The live progress lines of a running stage are stage_progress.StageProgress, a Ray Tune callback.)"""
from .trial import TEACHER_ONLY, flat_config

__all__ = ["describe", "flat_config", "varying_keys"]


def varying_keys(rows: list[dict], sampled=()) -> list[str]:
    """The keys that tell trials apart: those whose values differ between rows, plus sampled ones."""
    keys = [k for k in rows[0] if len({repr(r.get(k)) for r in rows}) > 1 and k not in ("teacher_hash", "soft_labels")]
    return keys + [k for k in sampled if k not in keys]


def describe(config: dict, keys: list[str]) -> str:
    """A short summary of a trial's config in terms of the keys that vary in its sweep."""
    row = flat_config(config)
    if row.get("kd_epochs") == 0:
        keys = [k for k in keys if k not in TEACHER_ONLY + ("kd_epochs",)]
        return " ".join(["CE-only", *(_pair(k, row.get(k)) for k in keys)])
    return " ".join(_pair(k, row.get(k)) for k in keys)


def _pair(key: str, value) -> str:
    return f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
