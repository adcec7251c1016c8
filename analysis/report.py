"""`tune-eskd report`: EXPERIMENT/report/report.md and a self-contained report.html (figures embedded).

The report holds the figures, the per-snapshot summary, the top configs, the teachers, a plain statement of
which differences lie within seed noise (each comparison says whether its test was paired), what matters most
(the share of the variance each knob explains), the sweep's timeline (analysis.timeline), its search space and
options, and the library versions. It is built once as a document (analysis.document) and rendered to both
files by the templates in analysis/templates/.
"""
import json
import time

import pandas as pd

from tune_eskd.blobs import filesystem, read_bytes, write_bytes

from . import document as doc
from . import present, stats
from .figures import make_figures
from .findings import seed_noise_findings
from .importance import headline as importance_headline, importance
from .labels import is_blank, knob_text, metric_name, pct, percent, snapshot_label, teacher_names
from .stats import METRIC, SELECT_ON
from .tables import Tables, load
from .timeline import timeline_figure

REPORT_DIR = "report"
METHOD = ("Accuracies are percentages. Configs are chosen on validation accuracy; test accuracy is reported, never "
          "tuned on. Means are over seeds (student seeds; teacher seeds too, pooled, where the sweep varies them: "
          "each table says which seeds its CI covers); 95% confidence intervals use Student's t. Only configs whose "
          "every seed ran all its epochs count: ASHA stops single seeds, and the survivors of a partly stopped "
          "config would bias its mean up. Two groups differ beyond seed noise when the confidence interval of their "
          "difference excludes 0: a paired t-test on the per-seed differences when both have the same seeds, "
          "Welch's t-test otherwise (each comparison says which). No seed variance is taken below the binomial "
          "variance of an accuracy measured on the evaluation set's images.")


def build_report(experiment_path: str, tables: Tables | None = None, teacher_stats: bool = True) -> str:
    """Write the report and return the path of report.html. teacher_stats=False skips the teacher soft-label
    statistics (which run every new snapshot once, with torch)."""
    tables = tables or load(experiment_path, teacher_stats=teacher_stats)
    base = f"{tables.path}/{REPORT_DIR}"
    figures = make_figures(tables, f"{base}/figures")
    report = _document(tables, figures, _timeline(tables.path, f"{base}/figures"))
    fsys, root = filesystem(base)
    write_bytes(fsys, f"{root}/report.md", doc.render(report, "md").encode())
    write_bytes(fsys, f"{root}/report.html", doc.render(report, "html").encode())
    return f"{base}/report.html"


TIMELINE = ("Each row is a worker slot; its bars are the teacher epochs, soft-label tasks and student trials it ran "
            "over the sweep's wall time (a cross marks a student that ended before its last epoch), and the makespan "
            "is set against the critical-path lower bound, what the sweep would take with unlimited slots.")


def _timeline(experiment_path: str, out_dir: str) -> doc.Figure:
    """The sweep's timeline (analysis.timeline), as figures/timeline.png."""
    figure = doc.Figure("timeline", "Timeline", TIMELINE, svg=False)
    path = timeline_figure(experiment_path, f"{out_dir}/timeline.png")
    if path is None:
        figure.skipped = "no trial has reported an epoch yet"
    else:
        fsys, p = filesystem(path)
        figure.png = read_bytes(fsys, p)
    return figure


def _summary(tables: Tables, done: pd.DataFrame) -> list[str]:
    trials = tables.trials
    summary = [present.status_line(trials)]
    if len(done):
        best = stats.best_configs(done, SELECT_ON, METRIC, top=1).iloc[0]
        names = teacher_names(tables.teachers, "teacher_config")
        knobs = knob_text(best)
        ci = "" if is_blank(best[f"{METRIC}_ci_half"]) else f" ± {percent(best[f'{METRIC}_ci_half'])}"
        summary.append(f"Best config by mean {metric_name(SELECT_ON)} over seeds: {snapshot_label(best, names)}"
                       f"{f' ({knobs})' if knobs else ''}, {metric_name(SELECT_ON)} {pct(best[SELECT_ON])}, "
                       f"{metric_name(METRIC)} {pct(best[f'{METRIC}_mean'])}{ci} over {int(best['n'])} "
                       f"{best['covers']}.")
    else:
        summary.append("No config has all its seeds finished yet; the tables below show what there is.")
    partial = present.partial_line(trials)
    if partial:
        summary.append(partial + " An ASHA sweep compares the configs it let finish, not every config. The "
                       "figures draw their students as hollow markers, at the accuracy of their last epoch.")
    unfinished = int((~trials["status"].isin(["TERMINATED"])).sum())
    if unfinished:
        summary.append(f"{unfinished} trials have not finished (running, pending, paused or errored); "
                       f"`tune-eskd resume {tables.path}` continues an interrupted sweep.")
    return summary


def _document(tables: Tables, figures, timeline: doc.Figure) -> doc.Document:
    """Every section of the report, in order, as one document (analysis.document)."""
    trials = tables.trials
    done = stats.completed(trials)
    done = done[done[METRIC].notna()]
    name = tables.path.rstrip("/").rsplit("/", 1)[-1]
    findings = seed_noise_findings(tables, done, METRIC, SELECT_ON)
    ranked = importance(trials)
    # a skipped importance section has no figure to point at
    see = ([" See the figure ", doc.emphasis("What matters most"), " below."] if not ranked.skipped else [])
    sweep = tables.sweep
    sections = [
        doc.Section("", [doc.Fields([
            ("experiment", tables.path), ("search space", sweep.get("space_name", "?")),
            ("scheduler", tables.scheduler), ("generated", time.strftime("%Y-%m-%d %H:%M:%S")),
            ("tables", f"{tables.path}/tables/ (teachers, trials, epochs, teacher_epochs .parquet)")])]),
        doc.Section("Summary", [doc.Bullets(_summary(tables, done)), doc.paragraph(METHOD)]),
        doc.Section("Which differences are findings", [doc.Note(findings.headline), doc.Bullets(findings.lines())]),
        doc.Section("What matters most", [doc.paragraph(importance_headline(ranked), *see)]),
        doc.Section("Students per teacher snapshot",
                    [doc.Table(present.snapshot_table(tables, done, METRIC, SELECT_ON))]),
        doc.Section("Top configs", [doc.Table(present.top_configs(tables, done, SELECT_ON, METRIC, top=10))]),
        doc.Section("Figures", [doc.Figure(f.name, f.title, f.caption, f.png, f.skipped) for f in figures]),
        doc.Section("Where the time went", [timeline]),
        doc.Section("Teachers", [doc.Table(present.teachers_table(tables))]),
        doc.Section("Sweep configuration", [doc.Table(_kv(sweep.get("space", {})), "Search space"),
                                            doc.Table(_kv(sweep.get("options", {})), "Options"),
                                            doc.Table(_kv(sweep.get("versions", {})), "Library versions")]),
    ]
    if tables.notes:
        sections.append(doc.Section("Notes", [doc.Bullets(tables.notes)]))
    return doc.Document(f"ESKD sweep report: {name}", sections)


def _kv(d: dict) -> pd.DataFrame:
    return pd.DataFrame([{"key": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v}
                         for k, v in d.items()])
