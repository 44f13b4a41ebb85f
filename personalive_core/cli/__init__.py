"""Commands of `python -m personalive_core`: render, bench, precision, weights tools."""
