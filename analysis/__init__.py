"""Analysis of a tune-eskd experiment: parquet tables, pandas queries, figures, report."""
