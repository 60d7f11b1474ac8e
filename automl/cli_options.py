"""The command line's options: one parser per command of ``automl``.

Flags are parsed here; their ranges and combinations are checked in one place,
:meth:`automl.config.SearchConfig.validate`, whose errors name the flag and the fix.
"""

from __future__ import annotations

import argparse
from typing import Any

from automl import __version__


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _number(text: str) -> float:
    """A float flag; its range is checked by :meth:`SearchConfig.validate`, naming the flag."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported on one line (not the usage block) and exit 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"automl: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="automl", description="AutoML: find the best model for a table within a time budget.")
    parser.add_argument("--version", action="version", version=f"automl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add_command in (_fit_command, _predict_command, _dashboard_command, _report_command):
        common(add_command(sub))
    return parser


def _fit_command(sub: Any) -> argparse.ArgumentParser:
    fit = sub.add_parser("fit", help="search for the best model of a CSV/Parquet file",
                         description="Search learners and hyperparameters with Optuna, refit the "
                         "best on all rows, and save it with its leaderboard and study.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("data", help="training data: a CSV (delimiter and encoding sniffed) or Parquet "
                     "file, or a folder of images with one sub-folder per class")
    fit.add_argument("--target", "-t", default=None,
                     help="name of the column to predict (required unless DATA is a folder of images)")
    fit.add_argument("--image-columns", type=csv_list, default=None, metavar="COLUMNS",
                     help="columns of image file paths (relative to the CSV's folder); found by default")
    fit.add_argument("--task", default="auto", choices=["auto", "binary", "multiclass", "regression"],
                     help="prediction task; auto infers it from the target's values")
    fit.add_argument("--metric", default="auto",
                     help="metric to optimise: auto (ROC AUC for binary, log loss for multiclass, RMSE "
                     "for regression), roc_auc, log_loss, accuracy, balanced_accuracy, f1, "
                     "average_precision, rmse, mae, r2")
    fit.add_argument("--time-budget", type=_number, default=None, metavar="SECONDS",
                     help="wall-clock budget for the whole run, refit and saving included "
                     "(default 60 when --n-trials is not given)")
    fit.add_argument("--n-trials", type=_integer, default=None, help="stop after this many trials")
    fit.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "gp", "cmaes", "qmc"],
                     help="Optuna sampler (GP and CMA-ES model numeric parameters of one learner "
                     "best: combine them with --include)")
    fit.add_argument("--pruner", default="median", choices=["median", "halving", "hyperband", "none"],
                     help="early stopping of unpromising trials")
    fit.add_argument("--seed", type=_integer, default=0, help="random seed (splits, sampler, learners)")
    fit.add_argument("--output", "-o", default="automl-out", help="output folder")
    fit.add_argument("--storage", default=None,
                     help="Optuna storage URL (default: sqlite:///OUTPUT/study.db); e.g. "
                     "postgresql://user:pw@host/db or a journal file path ending in .log")
    fit.add_argument("--study-name", default="automl", help="name of the study in the storage")
    fit.add_argument("--n-jobs", type=_integer, default=1,
                     help="parallel worker processes on the same study (-1: one per core)")
    fit.add_argument("--include", type=csv_list, default=None, metavar="LEARNERS",
                     help="comma-separated learners to search (default: all for the task): lightgbm, "
                     "hist_gb, random_forest, extra_trees, logistic, ridge, elasticnet, knn, catboost, mlp; "
                     "'default' stands for the default ones (e.g. default,catboost)")
    fit.add_argument("--exclude", type=csv_list, default=None, metavar="LEARNERS",
                     help="comma-separated learners to leave out")
    fit.add_argument("--ignore-columns", type=csv_list, default=None, metavar="COLUMNS",
                     help="comma-separated columns to leave out (e.g. ones that leak the target)")
    fit.add_argument("--cv", default="auto",
                     help="validation: auto (5-fold up to 10,000 rows, else a 20%% holdout), holdout, or a number of folds")
    fit.add_argument("--bagging", action="store_true",
                     help="with k-fold validation, make each final member the average of its trial's "
                     "fold models instead of a refit on all rows (no refit time; 5x larger model)")
    fit.add_argument("--memory-limit", type=_number, default=None, metavar="MB",
                     help="memory cap per trial: what a trial may allocate on top of the main process "
                     "(default: 70%% of the memory available, shared by the workers)")
    fit.add_argument("--trial-timeout", type=_number, default=None, metavar="SECONDS",
                     help="stop any single trial after this long")
    fit.add_argument("--text-backbone", default="auto", metavar="NAME",
                     help="sentence embeddings of text columns: auto (MiniLM when automl[text] is "
                          "installed and the budget allows), none (TF-IDF only), minilm, mpnet, "
                          "or a local sentence-transformers folder")
    fit.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                     help="device for deep learners (auto: a GPU when one is visible)")
    _executor_flags(fit)
    _run_flags(fit)
    return fit


def _run_flags(fit: argparse.ArgumentParser) -> None:
    """How the run treats its output folder, earlier runs and the display."""
    fit.add_argument("--resume", action="store_true",
                     help="continue the search saved in --output (after Ctrl-C, a crash or a kill; "
                     "--n-trials then counts the trials already run); with --storage and "
                     "--study-name, join a search that other processes are running")
    fit.add_argument("--force", action="store_true",
                     help="replace an existing --output folder that automl wrote (a folder with "
                     "other files is never replaced)")
    fit.add_argument("--allow-new-data", action="store_true",
                     help="with --resume, continue even though the data (or --text-backbone) "
                     "differs from the run's first (earlier trials keep their old scores)")
    fit.add_argument("--no-isolation", action="store_true",
                     help="run trials in this process (no hard time or memory limits)")
    fit.add_argument("--progress", default="auto", choices=["auto", "rich", "plain", "json", "none"],
                     help="progress display: auto (a live display when stderr is a terminal, else "
                     "plain lines), rich, plain, json (one JSON object per trial on stdout), none")
    fit.add_argument("--json-lines", dest="progress", action="store_const", const="json",
                     help="same as --progress json")


def _predict_command(sub: Any) -> argparse.ArgumentParser:
    pred = sub.add_parser("predict", help="predict with a saved model",
                          description="Write a `prediction` column and, for classification, one "
                          "`proba_<class>` column per class.")
    pred.add_argument("model", help="model folder written by `automl fit`")
    pred.add_argument("data", help="CSV or Parquet file with the feature columns (matched by name), "
                      "or a folder of images")
    pred.add_argument("--output", "-o", default=None, help="predictions CSV (default: standard output)")
    pred.add_argument("--force", action="store_true", help="replace an existing --output file")
    return pred


def _dashboard_command(sub: Any) -> argparse.ArgumentParser:
    dash = sub.add_parser("dashboard", help="open the study in optuna-dashboard",
                          description="Serve the run's Optuna study with optuna-dashboard (adds the "
                          "metric name and a note explaining the trials to the study first).")
    dash.add_argument("run", help="output folder of `automl fit`")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1; 0.0.0.0: every interface — "
                      "the dashboard has no login)")
    dash.add_argument("--port", "-p", type=_integer, default=8080,
                      help="port to listen on (default: 8080; 0: a free one)")
    dash.add_argument("--no-annotate", action="store_true",
                      help="do not add the metric name, run note and chart to the study")
    return dash


def _report_command(sub: Any) -> argparse.ArgumentParser:
    rep = sub.add_parser("report", help="write a self-contained HTML report of a run",
                         description="Write one HTML file (plotly.js inline, works offline) with the "
                         "search's plots, the leaderboard and the best model's validation results.")
    rep.add_argument("run", help="output folder of `automl fit`")
    rep.add_argument("--output", "-o", default=None, help="HTML file to write (default: RUN/report.html)")
    rep.add_argument("--no-model", action="store_true",
                     help="skip refitting the best configuration (no validation plots; faster)")
    return rep


def _executor_flags(fit: argparse.ArgumentParser) -> None:
    """Where trials run: --executor, --ray-address, --cpus-per-trial, --gpus-per-trial."""
    fit.add_argument("--executor", default="local", choices=["local", "inprocess", "ray"],
                     help="where trials run: local (forked processes with hard time and memory "
                     "limits), inprocess (this process, no limits; same as --no-isolation), ray "
                     "(Ray tasks on a cluster; needs `pip install 'automl[ray]'`)")
    fit.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                     help="with --executor ray: the cluster to join (HOST:PORT or auto); default: "
                     "start a local Ray instance on 127.0.0.1 for this run")
    fit.add_argument("--cpus-per-trial", type=_number, default=None, metavar="N",
                     help="CPUs each trial reserves on Ray (default 1) and threads it uses")
    fit.add_argument("--gpus-per-trial", type=_number, default=0.0, metavar="F",
                     help="GPUs each trial gets (fractions share a GPU: 0.5 runs two trials per "
                     "GPU); refused where no GPU is visible")


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"executor": args.executor, "ray_address": args.ray_address,
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial}


def common(p: argparse.ArgumentParser) -> None:
    """The flags every command takes."""
    p.add_argument("--quiet", "-q", action="store_true", help="print only warnings and errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug messages")
