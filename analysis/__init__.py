"""analysis: Ray Tune experiment directories -> Parquet -> tables, statistics and plots (reads files only)."""
