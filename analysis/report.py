"""`tune-eskd report`: EXPERIMENT/report/report.md and a self-contained report.html (figures embedded).

The report holds the figures, the per-snapshot summary, the top configs, the teachers, a plain statement of
which differences lie within seed noise (each comparison says whether its test was paired), what matters most
(the share of the variance each knob explains), the sweep's search space and options, and the library versions.
"""
import base64
import html
import json
import time

import pandas as pd

from tune_eskd.blobs import filesystem, write_bytes

from . import present, stats
from .figures import make_figures
from .findings import seed_noise_findings
from .importance import headline as importance_headline, importance
from .labels import metric_name, pct, snapshot_label, teacher_names
from .tables import Tables, load

REPORT_DIR = "report"
METRIC, SELECT_ON = "final_test_acc", "final_val_acc"

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
.note { background: #fff8e6; border-left: 4px solid #f4a261; padding: 0.6em 1em; }
.skip { color: #777; }
code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def build_report(experiment_path: str, tables: Tables | None = None, teacher_stats: bool = True) -> str:
    """Write the report and return the path of report.html. teacher_stats=False skips the teacher soft-label
    statistics (which run every new snapshot once, with torch)."""
    tables = tables or load(experiment_path, teacher_stats=teacher_stats)
    base = f"{tables.path}/{REPORT_DIR}"
    figures = make_figures(tables, f"{base}/figures")
    sections = _sections(tables, figures)
    fsys, root = filesystem(base)
    write_bytes(fsys, f"{root}/report.md", _markdown(sections).encode())
    write_bytes(fsys, f"{root}/report.html", _html(sections).encode())
    return f"{base}/report.html"


def _sections(tables: Tables, figures) -> dict:
    trials = tables.trials
    done = stats.completed(trials)
    done = done[done[METRIC].notna()]
    name = tables.path.rstrip("/").rsplit("/", 1)[-1]
    findings = seed_noise_findings(tables, done, METRIC, SELECT_ON)
    summary = [present.status_line(trials)]
    if len(done):
        best = stats.best_configs(done, SELECT_ON, METRIC, top=1).iloc[0]
        names = teacher_names(tables.teachers, "teacher_config")
        cfg = snapshot_label(best, names)
        knobs = ("" if pd.isna(best.get("kd_epochs")) or int(best["kd_epochs"]) == 0 else
                 f" (alpha {best['alpha']:g}, T {best['temperature']:g}, KD {int(best['kd_epochs'])} epochs)")
        ci = "" if pd.isna(best[f"{METRIC}_ci_half"]) else f" ± {100 * best[f'{METRIC}_ci_half']:.2f}"
        summary.append(f"Best config by mean {metric_name(SELECT_ON)} over seeds: {cfg}{knobs}, "
                       f"{metric_name(SELECT_ON)} {pct(best[SELECT_ON])}, {metric_name(METRIC)} "
                       f"{100 * best[f'{METRIC}_mean']:.2f}%{ci} over {int(best['n'])} {best['covers']}.")
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
    ranked = importance(trials)
    return {
        "title": f"ESKD sweep report: {name}",
        "meta": [("experiment", tables.path), ("search space", tables.sweep.get("space_name", "?")),
                 ("scheduler", tables.scheduler),
                 ("generated", time.strftime("%Y-%m-%d %H:%M:%S")),
                 ("tables", f"{tables.path}/tables/ (teachers, trials, epochs, teacher_epochs .parquet)")],
        "summary": summary,
        "findings": findings,
        "importance": importance_headline(ranked),
        "importance_figure": not ranked.skipped,  # a skipped section has no figure to point at
        "snapshots": present.snapshot_table(tables, done, METRIC, SELECT_ON),
        "top": present.top_configs(tables, done, SELECT_ON, METRIC, top=10),
        "teachers": present.teachers_table(tables),
        "figures": figures,
        "space": tables.sweep.get("space", {}),
        "options": tables.sweep.get("options", {}),
        "versions": tables.sweep.get("versions", {}),
        "notes": tables.notes,
    }


def _kv(d: dict) -> pd.DataFrame:
    return pd.DataFrame([{"key": k, "value": json.dumps(v) if isinstance(v, (list, dict)) else v}
                         for k, v in d.items()])


METHOD = ("Accuracies are percentages. Configs are chosen on validation accuracy; test accuracy is reported, never "
          "tuned on. Means are over seeds (student seeds; teacher seeds too, pooled, where the sweep varies them: "
          "each table says which seeds its CI covers); 95% confidence intervals use Student's t. Only configs whose "
          "every seed ran all its epochs count: ASHA stops single seeds, and the survivors of a partly stopped "
          "config would bias its mean up. Two groups differ beyond seed noise when the confidence interval of their "
          "difference excludes 0: a paired t-test on the per-seed differences when both have the same seeds, "
          "Welch's t-test otherwise (each comparison says which). No seed variance is taken below the binomial "
          "variance of an accuracy measured on the evaluation set's images.")


def _markdown(s: dict) -> str:
    out = [f"# {s['title']}", ""]
    out += [f"- **{k}**: `{v}`" for k, v in s["meta"]] + [""]
    out += ["## Summary", ""] + [f"- {line}" for line in s["summary"]] + ["", METHOD, ""]
    out += ["## Which differences are findings", "", f"> {s['findings'].headline}", ""]
    out += [f"- {line}" for line in s["findings"].lines()] + [""]
    see = " See the figure *What matters most* below." if s["importance_figure"] else ""
    out += ["## What matters most", "", s["importance"] + see, ""]
    out += ["## Students per teacher snapshot", "", present.to_markdown(s["snapshots"]), ""]
    out += ["## Top configs", "", present.to_markdown(s["top"]), ""]
    out += ["## Figures", ""]
    for f in s["figures"]:
        if f.skipped:
            out += [f"### {f.title}", "", f"_Not drawn: {f.skipped}._", ""]
        else:
            out += [f"### {f.title}", "", f"![{f.title}](figures/{f.name}.png)", "", f.caption,
                    f"([SVG](figures/{f.name}.svg))", ""]
    out += ["## Teachers", "", present.to_markdown(s["teachers"]), ""]
    out += ["## Sweep configuration", "", "Search space:", "", present.to_markdown(_kv(s["space"])), "",
            "Options:", "", present.to_markdown(_kv(s["options"])), "",
            "Library versions:", "", present.to_markdown(_kv(s["versions"])), ""]
    if s["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in s["notes"]] + [""]
    return "\n".join(out)


def _html(s: dict) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(s['title'])}</title>"
           f"<style>{CSS}</style></head><body>", f"<h1>{e(s['title'])}</h1><ul>"]
    out += [f"<li><b>{e(k)}</b>: <code>{e(str(v))}</code></li>" for k, v in s["meta"]]
    out += ["</ul><h2>Summary</h2><ul>"] + [f"<li>{e(line)}</li>" for line in s["summary"]]
    out += [f"</ul><p>{e(METHOD)}</p>"]
    out += ["<h2>Which differences are findings</h2>", f"<p class='note'>{e(s['findings'].headline)}</p><ul>"]
    out += [f"<li>{e(line)}</li>" for line in s["findings"].lines()] + ["</ul>"]
    see = " See the figure <i>What matters most</i> below." if s["importance_figure"] else ""
    out += ["<h2>What matters most</h2>", f"<p>{e(s['importance'])}{see}</p>"]
    out += ["<h2>Students per teacher snapshot</h2>", present.to_html(s["snapshots"])]
    out += ["<h2>Top configs</h2>", present.to_html(s["top"]), "<h2>Figures</h2>"]
    for f in s["figures"]:
        out.append(f"<h3>{e(f.title)}</h3>")
        if f.skipped:
            out.append(f"<p class='skip'>Not drawn: {e(f.skipped)}.</p>")
        else:
            data = base64.b64encode(f.png).decode()
            out.append(f"<img alt='{e(f.title)}' src='data:image/png;base64,{data}'><p>{e(f.caption)}</p>")
    out += ["<h2>Teachers</h2>", present.to_html(s["teachers"])]
    out += ["<h2>Sweep configuration</h2><h3>Search space</h3>", present.to_html(_kv(s["space"])),
            "<h3>Options</h3>", present.to_html(_kv(s["options"])), "<h3>Library versions</h3>",
            present.to_html(_kv(s["versions"]))]
    if s["notes"]:
        out += ["<h2>Notes</h2><ul>"] + [f"<li>{e(n)}</li>" for n in s["notes"]] + ["</ul>"]
    out.append("</body></html>")
    return "\n".join(out)
