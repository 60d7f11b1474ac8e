"""``automl report OUT``: one self-contained HTML file reviewing a run.

The file works offline: plotly.js is embedded once, inline, and every figure is a plotly
figure drawn from JSON in the page. Its sections, one module each:

- :mod:`~automl.report.summary`: the run summary and the leaderboard;
- :mod:`~automl.report.optimization`: the search: optimization history, best score per
  learner, a timeline (pruned and failed trials included);
- :mod:`~automl.report.learners`: hyperparameters, per learner (a trial has only its own
  learner's parameters, so each learner's trials are viewed as a study of their own, prefix
  stripped): importances, parallel coordinates, slices;
- :mod:`~automl.report.diagnostics`: the best trial's model on validation data (the problem
  rebuilt and the best configuration refitted on split 1 by :mod:`~automl.report.refit`):
  confusion matrix, ROC and precision-recall curves, misclassified images
  (:mod:`~automl.report.images`) or texts (:mod:`~automl.report.text`), residuals, and
  permutation feature importance.

:mod:`~automl.report.page` lays the sections out in one page styled by ``style.css``. What
cannot be drawn (too few trials, the data file gone) is said in a note instead; the rest of
the report is still written.

Example:
    >>> from automl.rundir import open_run
    >>> page = build_report(open_run("automl-out"))  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from automl.report.diagnostics import model_section
from automl.report.learners import hyperparameter_section
from automl.report.optimization import search_section
from automl.report.page import FigureWriter, render_html
from automl.report.refit import quiet_logs
from automl.report.summary import leaderboard_section, summary_section
from automl.rundir import RunFolder, load_study, open_run

__all__ = ["build_report", "main"]
log = logging.getLogger("automl")


def build_report(run: RunFolder, include_model: bool = True) -> str:
    """The report of a run as one HTML string (see the module docstring for its contents)."""
    from automl import __version__
    from automl.leaderboard import leaderboard

    t0 = time.perf_counter()
    with quiet_logs():
        study = load_study(run)
    info = {**study.user_attrs, **run.info}
    metric = str(info.get("metric") or "objective")
    maximize = study.direction.name == "MAXIMIZE"
    fig = FigureWriter()
    sections = [summary_section(run, study), leaderboard_section(leaderboard(study, maximize))]
    with quiet_logs():
        sections.append(search_section(study, metric, fig))
        sections.append(hyperparameter_section(study, metric, fig, int(info.get("seed", 0) or 0)))
    if include_model:
        sections.append(model_section(run, study, fig))
    title = (f"automl report: {info.get('target', '?')} ({info.get('task', '?')}), "
             f"study '{run.study_name}'")
    better = "higher" if maximize else "lower"
    subtitle = (f"{info.get('n_rows', '?')} rows, {info.get('validation', '?')}, metric "
                f"{metric} ({better} is better) — {run.path.resolve()}")
    footer = (f"Written by automl {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S')} in "
              f"{time.perf_counter() - t0:.1f} s; {fig.count} figures. Interactive: hover, zoom, "
              "double-click to reset. Works offline.")
    return render_html(title, subtitle, sections, footer)


def main(args: argparse.Namespace) -> int:
    """Entry point of ``automl report``."""
    from automl.persistence import atomic_write_text

    run = open_run(args.run)
    out = Path(args.output) if getattr(args, "output", None) else run.path / "report.html"
    if out.exists() and out.is_dir():
        from automl.exceptions import ConfigError

        raise ConfigError(f"--output '{out}' is a folder; give the path of an .html file.")
    t0 = time.perf_counter()
    page = build_report(run, include_model=not getattr(args, "no_model", False))
    atomic_write_text(out, page)
    log.info("wrote the report to %s (%.1f MB, %.1f s)", out, len(page.encode()) / 1e6,
             time.perf_counter() - t0)
    return 0
