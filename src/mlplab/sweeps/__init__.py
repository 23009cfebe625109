"""Hyperparameter sweeps that end with an answer: which setting is best, by how much, how sure.

- `jobs`: what one job directory of a sweep holds (its overrides, summary.json, status).
- `leaderboard`: jobs grouped into settings (seeds averaged), ranked, written as CSV/Markdown.
- `plot`: leaderboard.png.
- `preflight`: before any job starts, every job's config is composed and validated and the
  datasets it needs are provisioned once.
- `callback`: the Hydra callback (conf/hydra/default.yaml) that runs preflight and the report.

`python -m mlplab.sweeps DIR` rebuilds the report of any sweep directory.

This module stays import-light: Hydra instantiates the callback on every run, sweep or not.
"""
