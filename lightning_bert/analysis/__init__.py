"""Run analysis: the sweep controller, reading run records, tables and statistics, plots, the HTML report."""
