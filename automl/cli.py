"""The command line: ``automl fit``, ``automl predict`` and friends.

Bad input ends with one line on stderr naming the problem and the fix, exit status 2,
and no traceback (unless ``--debug``). Ctrl-C (or SIGTERM) exits with 130 and says how to
resume. ``AUTOML_PLUGINS`` (comma-separated module names) is imported first, e.g. to
register custom trainers with :func:`automl.registry.register`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from automl import __version__
from automl.exceptions import AutoMLError, ConfigError, OutputExistsError

log = logging.getLogger("automl")
RUN_FILE = "run.json"


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automl", description="AutoML: find the best model for a table within a time budget.")
    parser.add_argument("--version", action="version", version=f"automl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser("fit", help="search for the best model of a CSV/Parquet file",
                         description="Search learners and hyperparameters with Optuna, refit the "
                         "best on all rows, and save it with its leaderboard and study.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("data", help="training data: a CSV (delimiter and encoding sniffed) or Parquet file")
    fit.add_argument("--target", "-t", required=True, help="name of the column to predict")
    fit.add_argument("--task", default="auto", choices=["auto", "binary", "multiclass", "regression"],
                     help="prediction task; auto infers it from the target's values")
    fit.add_argument("--metric", default="auto",
                     help="metric to optimise: auto (ROC AUC for binary, log loss for multiclass, RMSE "
                     "for regression), roc_auc, log_loss, accuracy, balanced_accuracy, f1, "
                     "average_precision, rmse, mae, r2")
    fit.add_argument("--time-budget", type=_positive_float, default=None, metavar="SECONDS",
                     help="wall-clock budget for the whole run, refit and saving included "
                     "(default 60 when --n-trials is not given)")
    fit.add_argument("--n-trials", type=int, default=None, help="stop after this many trials")
    fit.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid", "gp", "cmaes", "qmc"],
                     help="Optuna sampler (GP and CMA-ES model numeric parameters of one learner "
                     "best: combine them with --include)")
    fit.add_argument("--pruner", default="median", choices=["median", "halving", "hyperband", "none"],
                     help="early stopping of unpromising trials")
    fit.add_argument("--seed", type=int, default=0, help="random seed (splits, sampler, learners)")
    fit.add_argument("--output", "-o", default="automl-out", help="output folder")
    fit.add_argument("--storage", default=None,
                     help="Optuna storage URL (default: sqlite:///OUTPUT/study.db); e.g. "
                     "postgresql://user:pw@host/db or a journal file path ending in .log")
    fit.add_argument("--study-name", default="automl", help="name of the study in the storage")
    fit.add_argument("--n-jobs", type=int, default=1,
                     help="parallel worker processes on the same study (-1: one per core)")
    fit.add_argument("--include", type=_csv_list, default=None, metavar="LEARNERS",
                     help="comma-separated learners to search (default: all for the task): lightgbm, "
                     "hist_gb, random_forest, extra_trees, logistic, ridge, elasticnet, knn, catboost, mlp; "
                     "'default' stands for the default ones (e.g. default,catboost)")
    fit.add_argument("--exclude", type=_csv_list, default=None, metavar="LEARNERS",
                     help="comma-separated learners to leave out")
    fit.add_argument("--ignore-columns", type=_csv_list, default=None, metavar="COLUMNS",
                     help="comma-separated columns to leave out (e.g. ones that leak the target)")
    fit.add_argument("--cv", default="auto",
                     help="validation: auto (5-fold up to 10,000 rows, else a 20%% holdout), holdout, or a number of folds")
    fit.add_argument("--bagging", action="store_true",
                     help="with k-fold validation, make each final member the average of its trial's "
                     "fold models instead of a refit on all rows (no refit time; 5x larger model)")
    fit.add_argument("--memory-limit", type=_positive_float, default=None, metavar="MB",
                     help="memory cap per trial: what a trial may allocate on top of the main process "
                     "(default: 70%% of the memory available, shared by the workers)")
    fit.add_argument("--trial-timeout", type=_positive_float, default=None, metavar="SECONDS",
                     help="stop any single trial after this long")
    fit.add_argument("--text-backbone", default="auto", metavar="NAME",
                     help="sentence embeddings of text columns: auto (MiniLM when automl[text] is "
                          "installed and the budget allows), none (TF-IDF only), minilm, mpnet, "
                          "or a local sentence-transformers folder")
    fit.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu"],
                     help="device for deep learners (auto: a GPU when one is visible)")
    fit.add_argument("--gpus-per-trial", type=_positive_float, default=0.0, metavar="N",
                     help="GPUs each deep-learning trial may use (0: CPU unless --accelerator gpu)")
    fit.add_argument("--resume", action="store_true",
                     help="continue the search saved in --output (after Ctrl-C, a crash or a kill; "
                     "--n-trials then counts the trials already run); with --storage and "
                     "--study-name, join a search that other processes are running")
    fit.add_argument("--force", action="store_true", help="replace an existing --output folder")
    fit.add_argument("--no-isolation", action="store_true",
                     help="run trials in this process (no hard time or memory limits)")
    fit.add_argument("--progress", default="auto", choices=["auto", "rich", "plain", "json", "none"],
                     help="progress display: auto (a live display when stderr is a terminal, else "
                     "plain lines), rich, plain, json (one JSON object per trial on stdout), none")
    fit.add_argument("--json-lines", dest="progress", action="store_const", const="json",
                     help="same as --progress json")
    _common(fit)

    pred = sub.add_parser("predict", help="predict with a saved model",
                          description="Write a `prediction` column and, for classification, one "
                          "`proba_<class>` column per class.")
    pred.add_argument("model", help="model folder written by `automl fit`")
    pred.add_argument("data", help="CSV or Parquet file with the feature columns (matched by name)")
    pred.add_argument("--output", "-o", default=None, help="predictions CSV (default: standard output)")
    pred.add_argument("--force", action="store_true", help="replace an existing --output file")
    _common(pred)

    dash = sub.add_parser("dashboard", help="open the study in optuna-dashboard",
                          description="Serve the run's Optuna study with optuna-dashboard (adds the "
                          "metric name and a note explaining the trials to the study first).")
    dash.add_argument("run", help="output folder of `automl fit`")
    dash.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1; 0.0.0.0: every interface — "
                      "the dashboard has no login)")
    dash.add_argument("--port", "-p", type=int, default=8080,
                      help="port to listen on (default: 8080; 0: a free one)")
    dash.add_argument("--no-annotate", action="store_true",
                      help="do not add the metric name, run note and chart to the study")
    _common(dash)

    rep = sub.add_parser("report", help="write a self-contained HTML report of a run",
                         description="Write one HTML file (plotly.js inline, works offline) with the "
                         "search's plots, the leaderboard and the best model's validation results.")
    rep.add_argument("run", help="output folder of `automl fit`")
    rep.add_argument("--output", "-o", default=None, help="HTML file to write (default: RUN/report.html)")
    rep.add_argument("--no-model", action="store_true",
                     help="skip refitting the best configuration (no validation plots; faster)")
    _common(rep)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="print only warnings and errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug messages")


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(relativeCreated)7.0fms %(levelname)s: %(message)s" if args.debug else "automl: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING if args.debug else optuna.logging.ERROR)
    if not args.debug:
        import warnings

        warnings.filterwarnings("ignore")


def _prepare_output(out: Path, resume: bool, force: bool, shared: bool = False) -> Path | None:
    """Check the output folder; with --force move an existing one aside (restored on failure).

    ``--resume`` continues the study recorded in the folder's run.json; with ``--storage``
    (``shared``) it may also join a study that other processes run, from a new folder.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output '{out}' is a file; give a folder path.")
    if resume:
        if (out / RUN_FILE).is_file():
            return None
        if not shared:
            raise ConfigError(f"nothing to resume in '{out}' (no {RUN_FILE}); run without --resume "
                              "first, or pass --storage and --study-name to join a shared study.")
        if out.exists() and any(out.iterdir()):
            raise OutputExistsError(f"output folder '{out}' already exists and holds no automl run; "
                                    "choose an empty or new --output to join the study.")
        return None
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"output folder '{out}' already exists; pass --resume to continue its "
                                    "search, --force to replace it, or choose another --output.")
        aside = out.with_name(f"{out.name}.replaced-{int(time.time())}")
        out.rename(aside)
        return aside
    return None


def _own_storage(url: Any, out: Path) -> Any:
    """A copied or moved output folder resumes its own study file, not the one it came from."""
    if isinstance(url, str) and url.startswith("sqlite:///"):
        own = out / Path(url[len("sqlite:///"):]).name
        if own.is_file():
            return f"sqlite:///{own.resolve()}"
    return url


def _restore_output(out: Path, aside: Path, args: argparse.Namespace) -> None:
    """Put back the folder that --force moved aside: the run that was to replace it failed."""
    shutil.rmtree(out, ignore_errors=True)
    aside.rename(out)
    args.restored_output = True
    log.info("restored the earlier contents of '%s'", out)


def _process_start() -> float:
    """When this process started, on the ``time.monotonic`` clock (the budget counts it all)."""
    try:
        import psutil

        age = time.time() - psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no psutil or no /proc: count from now
        return time.monotonic()
    return time.monotonic() - min(max(age, 0.0), 60.0)


def cmd_fit(args: argparse.Namespace) -> int:
    start = _process_start()
    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target, read_table
    from automl.leaderboard import leaderboard, write_csv
    from automl.persistence import atomic_write_text, save_model, skops_io

    skops_io()  # import now (seconds: it indexes scikit-learn), inside the budget, before forking
    from automl.progress import make_progress

    out = Path(args.output)
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials got {args.n_trials}; give at least 1 trial.")
    config = SearchConfig(
        task=args.task, metric=args.metric, time_budget=args.time_budget, n_trials=args.n_trials,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed, n_jobs=args.n_jobs,
        include=args.include, exclude=args.exclude, cv=args.cv, memory_limit_mb=args.memory_limit,
        trial_timeout=args.trial_timeout, isolate=not args.no_isolation, bagging=args.bagging,
        accelerator=args.accelerator, gpus_per_trial=args.gpus_per_trial,
        text_backbone=args.text_backbone,
    ).validate()
    # out-of-fold predictions live in the output folder, so a resumed run can still
    # ensemble the trials of the run it continues
    config.extra["oof_dir"] = str(Path(args.output) / "oof")
    df = read_table(args.data)
    if args.ignore_columns:
        unknown = [c for c in args.ignore_columns if c not in df.columns]
        if unknown:
            raise ConfigError(f"--ignore-columns names unknown column(s) {unknown}; check the spelling.")
        df = df.drop(columns=args.ignore_columns)
    X, target = prepare_target(df, args.target, config.task)
    aside = _prepare_output(out, args.resume, args.force, shared=args.storage is not None)
    storage = args.storage
    run_info: dict[str, Any] = {}
    if args.resume and (out / RUN_FILE).is_file():
        run_info = json.loads((out / RUN_FILE).read_text())
        storage = storage or _own_storage(run_info.get("storage"), out)
        if args.study_name == "automl" and run_info.get("study_name"):
            args.study_name = run_info["study_name"]
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    run_info.update({"storage": storage, "study_name": args.study_name, "target": args.target,
                     "data": str(Path(args.data).resolve()), "automl": __version__})
    atomic_write_text(out / RUN_FILE, json.dumps(run_info, indent=2))
    progress = make_progress(getattr(args, "progress", "auto"), config, quiet=args.quiet, start=start)
    try:
        result = engine.fit(X, target, config, target_name=args.target, storage_url=storage,
                            study_name=args.study_name, resume=args.resume, start=start,
                            callbacks=[progress])
    except BaseException:
        progress.close()
        if aside is not None:
            _restore_output(out, aside, args)
        raise
    board = leaderboard(result.study, result.problem.metric.greater_is_better)
    summary = {**result.summary, "target": args.target, "data": str(args.data),
               "storage": storage, "study_name": args.study_name, "sampler": config.sampler,
               "pruner": config.pruner, "seed": config.seed, "time_budget": config.time_budget}
    try:
        save_model(result.model, out, extra={"summary": summary})
        write_csv(board, out / "leaderboard.csv")
    except BaseException:
        if aside is not None:
            _restore_output(out, aside, args)
        raise
    summary["elapsed_s"] = round(time.monotonic() - start, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    progress.final(board, result, out)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from automl.data import read_table
    from automl.leaderboard import escape_formulas
    from automl.persistence import atomic_write_text, load_model

    if args.output and Path(args.output).exists() and not args.force:
        raise OutputExistsError(f"--output '{args.output}' already exists; pass --force to replace it "
                                "or choose another file.")
    if args.output and Path(args.output).resolve() == Path(args.data).resolve():
        raise ConfigError("--output is the input file; choose another file so the input is kept.")
    model = load_model(args.model)
    df = read_table(args.data)
    preds = escape_formulas(model.predict_frame(df))
    text = preds.to_csv(index=False)
    if args.output:
        atomic_write_text(Path(args.output), text)
        log.info("wrote %d predictions to %s", len(preds), args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from automl.dashboard import main as dashboard_main

    return dashboard_main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from automl.report import main as report_main

    return report_main(args)


def _load_plugins() -> None:
    """Import the modules named in ``AUTOML_PLUGINS`` (comma-separated), e.g. ones that
    register custom trainers with :func:`automl.registry.register`."""
    import importlib

    for name in _csv_list(os.environ.get("AUTOML_PLUGINS", "")):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"AUTOML_PLUGINS names module '{name}', which cannot be imported "
                              f"({exc}); fix the name or PYTHONPATH.") from None


def _resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """How to continue an interrupted ``automl fit``: the same command with --resume."""
    if args.command != "fit":
        return ""
    if getattr(args, "restored_output", False):
        return f"; '{args.output}' keeps its earlier contents"
    if not (Path(args.output) / RUN_FILE).is_file():
        return ""  # stopped before the search started: nothing to resume
    words = [w for w in argv if w != "--force"]
    if "--resume" not in words:
        words.append("--resume")
    return f"; resume with: automl {shlex.join(words)}"


COMMANDS = {"fit": cmd_fit, "predict": cmd_predict, "dashboard": cmd_dashboard, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """The ``automl`` command; returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command started (imports) or while reporting
        print("automl: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while waiting slow everything down on a busy machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args)
    previous = _sigterm_as_interrupt() if args.command == "fit" else None
    try:
        _load_plugins()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"automl: interrupted{_resume_hint(args, sys.argv[1:] if argv is None else argv)}",
              file=sys.stderr)
        return 130
    except AutoMLError as exc:
        if args.debug:
            raise
        print(f"automl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"automl: internal error: {type(exc).__name__}: {msg} (rerun with --debug for details)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt() -> Any:
    """Let `kill PID` stop a search as cleanly as Ctrl-C; returns the handler it replaced."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
