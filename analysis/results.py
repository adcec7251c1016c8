"""`tune-eskd results`: top configs and the per-snapshot summary, filtered with a pandas query, or exported.
Several experiments print side by side."""
import difflib
import io
import os
import re

import pandas as pd

from tune_eskd.errors import UsageError
from tune_eskd.blobs import filesystem, write_bytes

from . import present, stats
from .findings import seed_noise_findings
from .labels import metric_name
from .tables import load

TABLE_NAMES = ("trials", "epochs", "teachers", "teacher_epochs")
FORMATS = ("csv", "parquet", "markdown")


def apply_query(df: pd.DataFrame, query: str | None, table: str = "trials") -> pd.DataFrame:
    """DataFrame.query on the user's own --query; any failure becomes a one-line UsageError."""
    if not query:
        return df
    try:
        out = df.query(query)
    except Exception as exc:  # pandas raises NameError, SyntaxError, ValueError, TypeError, KeyError, ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        m = re.search(r"name '([^']+)' is not defined", msg)
        if m:
            near = difflib.get_close_matches(m.group(1), [str(c) for c in df.columns], n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UsageError(f"--query {query!r} does not work on the {table} table ({type(exc).__name__}: {msg}){hint}; "
                         f"columns: {', '.join(map(str, df.columns))}") from None
    if not isinstance(out, pd.DataFrame):
        raise UsageError(f"--query {query!r} must be a filter (a condition on columns), e.g. \"snapshot_epoch == 2\"")
    return out


def export(df: pd.DataFrame, fmt: str | None, out: str | None) -> str | None:
    """Write df as csv, parquet or markdown to `out` (a path or URI), or return the text for stdout."""
    if fmt is None:
        ext = os.path.splitext(out or "")[1].lower().lstrip(".")
        fmt = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "md": "markdown", "markdown": "markdown"}.get(ext)
        if fmt is None:
            raise UsageError(f"cannot tell the format of --out {out!r}: add --format csv, parquet or markdown")
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    elif fmt == "markdown":
        data = (present.to_markdown(df) + "\n").encode()
    else:
        if not out:
            raise UsageError("--format parquet writes a binary file: give it --out FILE.parquet")
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
        data = buf.getvalue()
    if not out:
        return data.decode()
    fsys, path = filesystem(out)
    try:
        write_bytes(fsys, path, data)
    except OSError as exc:
        raise UsageError(f"cannot write --out {out} ({exc}): pick a writable path") from None
    return None


def run_results(experiments, query: str | None = None, table: str = "trials", metric: str = "final_val_acc",
                report_metric: str = "final_test_acc", top: int = 10, fmt: str | None = None,
                out: str | None = None, teacher_stats: bool = True) -> None:
    if table not in TABLE_NAMES:
        raise UsageError(f"--table {table!r}: choose one of {', '.join(TABLE_NAMES)}")
    if metric.endswith("test_acc"):
        raise UsageError(f"--metric {metric}: rank on a validation metric (final_val_acc or best_val_acc); "
                         f"test accuracy is reported, never tuned on")
    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    tables = load(*experiments, teacher_stats=teacher_stats)
    for name in (metric, report_metric):
        if name not in tables.trials:
            raise UsageError(f"unknown metric {name!r}: use a trials column such as final_val_acc or best_val_acc")
    df = apply_query(getattr(tables, table), query, table)
    if fmt or out:
        text = export(df, fmt, out)
        if text is not None:
            print(text, end="")
        else:
            print(f"wrote {len(df)} rows of the {table} table to {out}")
        return
    several = len(tables.sweeps) > 1
    for name, sweep in tables.sweeps.items():
        print(f"experiment {name if several else tables.path} (space {sweep.get('space_name')}, "
              f"scheduler {sweep.get('options', {}).get('scheduler', 'fifo')})")
    for note in tables.notes:
        print(f"note: {note}")
    if table != "trials":
        print(f"{table}: {len(df)} rows" + (f" matching {query!r}" if query else ""))
        print(present.to_markdown(df, max_rows=50))
        return
    trials = df
    for name, part in (trials.groupby("experiment", sort=False) if several else [(None, trials)]):
        print((f"{name}: " if several else "") + present.status_line(part) + (f" matching {query!r}" if query else ""))
        partial = present.partial_line(part)
        if partial:
            print(partial)
    done = stats.completed(trials)
    done = done[done[metric].notna()]
    if done.empty:
        print("no config has all its seeds finished" + (" among those" if query else "")
              + ": statistics use complete configs only (ASHA stops single seeds; `--scheduler fifo` runs every "
                "seed to the end)")
        return
    print(f"\nTop configs by mean {metric_name(metric)} over seeds, complete configs only (accuracies in %):")
    top_table = (present.top_configs_per_experiment if several else present.top_configs)(
        tables, done, metric, report_metric, top)
    print(present.to_markdown(top_table))
    if several:
        print(f"\nStudents per teacher snapshot, side by side (config chosen on {metric_name(metric)}):")
        print(present.to_markdown(present.side_by_side(tables, done, report_metric, metric)))
        for name, part in done.groupby("experiment", sort=False):
            print(f"\n{name}: " + seed_noise_findings(tables, part, report_metric, metric).headline)
        print(f"\npandas: analysis.load({', '.join(repr(e) for e in experiments)})")
        return
    print(f"\nStudents per teacher snapshot (config chosen on {metric_name(metric)}):")
    print(present.to_markdown(present.snapshot_table(tables, done, report_metric, metric)))
    print("\n" + seed_noise_findings(tables, done, report_metric, metric).headline)
    print(f"\ntables: {tables.path}/tables/  (pandas: analysis.load({tables.path!r}))")
