"""`tune-eskd results` and `tune-eskd report` (registered by tune_eskd.cli)."""


def cmd_results(a) -> None:
    from .results import run_results

    run_results(a.experiments, query=a.query, table=a.table, metric=a.metric, report_metric=a.report_metric,
                top=a.top, fmt=a.format, out=a.out, teacher_stats=not a.no_teacher_stats)


def cmd_report(a) -> None:
    from .report import build_report

    path = build_report(a.experiment, teacher_stats=not a.no_teacher_stats)
    print(f"report: {path}\n        {path[:-5]}.md")


def add_subcommands(sub) -> None:
    p = sub.add_parser("results", help="top configs and per-snapshot summary; filter with --query, export tables; "
                                       "several experiments side by side")
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                   help="STORAGE/NAME, as printed by `tune-eskd sweep`; give several to compare sweeps side by side")
    p.add_argument("--query", default=None,
                   help="pandas DataFrame.query filter, e.g. \"snapshot_epoch == 2 and alpha == 0.9\"")
    p.add_argument("--table", default="trials", choices=["trials", "epochs", "teachers", "teacher_epochs"],
                   help="the table --query filters and --format/--out export (default: trials)")
    p.add_argument("--metric", default="final_val_acc",
                   help="validation metric to rank configs on (final_val_acc or best_val_acc)")
    p.add_argument("--report-metric", default="final_test_acc",
                   help="metric reported beside it (default final_test_acc; best_test_acc is test at the best-val epoch)")
    p.add_argument("--top", type=int, default=10, help="how many configs to list")
    p.add_argument("--format", choices=["csv", "parquet", "markdown"], default=None,
                   help="export the (filtered) table instead of printing the summary")
    p.add_argument("--out", default=None, help="file to export to (path or URI); csv/markdown go to stdout without it")
    p.add_argument("--no-teacher-stats", action="store_true",
                   help="skip the teacher soft-label statistics (they run each new snapshot once on the validation set)")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("report", help="write EXPERIMENT/report/report.md and a self-contained report.html")
    p.add_argument("experiment", help="STORAGE/NAME, as printed by `tune-eskd sweep`")
    p.add_argument("--no-teacher-stats", action="store_true",
                   help="skip the teacher soft-label statistics (they load each new snapshot with torch and run it "
                        "once on the validation set)")
    p.set_defaults(func=cmd_report)
