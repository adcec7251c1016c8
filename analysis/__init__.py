"""Analysis of a tune-eskd experiment: parquet tables, pandas queries, figures, report.

    import analysis
    t = analysis.load("/path/to/storage/my-study")              # = analysis.tables.load
    t = analysis.load("/path/to/storage/a", "/path/to/storage/b")  # several, with an `experiment` column
"""


def load(*experiments, write: bool = True, teacher_stats: bool = True):
    """analysis.tables.load (imported on first use, so that `tune-eskd` starts without pandas)."""
    from .tables import load as load_tables

    return load_tables(*experiments, write=write, teacher_stats=teacher_stats)
