"""The command line: ``automl fit``, ``automl predict`` and friends.

Bad input ends with one line on stderr naming the problem and the fix, exit status 2,
and no traceback (unless ``--debug``). Ctrl-C (or SIGTERM) exits with 130 and says how to
resume. ``AUTOML_PLUGINS`` (comma-separated module names) is imported first, e.g. to
register custom trainers with :func:`automl.registry.register`.
"""

from __future__ import annotations

import argparse
import errno
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
from automl.exceptions import AutoMLError, ConfigError, OutputExistsError, ResourceError
from automl.rundir import RUN_FILE

log = logging.getLogger("automl")


def _csv_list(text: str) -> list[str]:
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

    fit = sub.add_parser("fit", help="search for the best model of a CSV/Parquet file",
                         description="Search learners and hyperparameters with Optuna, refit the "
                         "best on all rows, and save it with its leaderboard and study.",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("data", help="training data: a CSV (delimiter and encoding sniffed) or Parquet "
                     "file, or a folder of images with one sub-folder per class")
    fit.add_argument("--target", "-t", default=None,
                     help="name of the column to predict (required unless DATA is a folder of images)")
    fit.add_argument("--image-columns", type=_csv_list, default=None, metavar="COLUMNS",
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
    _add_executor_flags(fit)
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
    _common(fit)

    pred = sub.add_parser("predict", help="predict with a saved model",
                          description="Write a `prediction` column and, for classification, one "
                          "`proba_<class>` column per class.")
    pred.add_argument("model", help="model folder written by `automl fit`")
    pred.add_argument("data", help="CSV or Parquet file with the feature columns (matched by name), "
                      "or a folder of images")
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
    dash.add_argument("--port", "-p", type=_integer, default=8080,
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


# -- where trials run (issue 13): --executor, --ray-address, --cpus-per-trial, --gpus-per-trial --
def _add_executor_flags(fit: argparse.ArgumentParser) -> None:
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


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"executor": args.executor, "ray_address": args.ray_address,
            "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial}
# -- end of the executor flags --------------------------------------------------------------


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
        # Other libraries' log records (no handler of their own) print as one line, never a traceback.
        # SQLAlchemy logs "Error closing cursor" with a traceback when Ctrl-C lands inside a query;
        # the interruption itself is reported by automl, so that record is noise here.
        other = logging.StreamHandler(sys.stderr)
        other.setFormatter(_OneLineFormatter("automl: %(name)s: %(message)s"))
        other.setLevel(logging.WARNING)
        logging.getLogger().handlers[:] = [other]
        logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)


class _OneLineFormatter(logging.Formatter):
    """The first line of a record, without the traceback it may carry (``--debug`` shows those)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        return (self.formatMessage(record).splitlines() or [""])[0]


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
    from automl import engine, rundir
    from automl.config import SearchConfig
    from automl.data import prepare_target, target_name
    from automl.images import read_fit_input
    from automl.leaderboard import leaderboard, write_csv
    from automl.persistence import atomic_write_text, save_model, skops_io

    skops_io()  # import now (seconds: it indexes scikit-learn), inside the budget, before forking
    from automl.progress import make_progress

    out = Path(args.output)
    config = SearchConfig(
        task=args.task, metric=args.metric, time_budget=args.time_budget, n_trials=args.n_trials,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed, n_jobs=args.n_jobs,
        include=args.include, exclude=args.exclude, cv=args.cv, memory_limit_mb=args.memory_limit,
        trial_timeout=args.trial_timeout, isolate=not args.no_isolation, bagging=args.bagging,
        accelerator=args.accelerator, text_backbone=args.text_backbone, **_executor_options(args),
    ).validate()
    # out-of-fold predictions live in the output folder, so a resumed run can still
    # ensemble the trials of the run it continues
    config.extra["oof_dir"] = str(out / rundir.OOF_DIR)
    df, args.target = read_fit_input(args.data, args.target, args.image_columns, config.extra)
    fingerprint = rundir.data_fingerprint(df)
    if args.ignore_columns:
        unknown = [c for c in args.ignore_columns if c not in df.columns]
        if unknown:
            raise ConfigError(f"--ignore-columns names unknown column(s) {unknown}; check the spelling.")
        df = df.drop(columns=args.ignore_columns)
    args.target = target_name(df, args.target)  # as the file spells it (spaces trimmed)
    X, target = prepare_target(df, args.target, config.task)
    backbone = rundir.text_backbone_option(args.text_backbone)
    output = rundir.prepare_output(out, resume=args.resume, force=args.force,
                                   shared=args.storage is not None)
    try:
        storage = args.storage
        run_info: dict[str, Any] = {}
        if args.resume and (out / RUN_FILE).is_file():
            run_info = rundir.read_json(out / RUN_FILE) or {}
            rundir.check_same_data(run_info.get("data_fingerprint"), fingerprint, args.data,
                                   allow=args.allow_new_data)
            rundir.check_same_backbone(run_info.get("text_backbone"), backbone, args.allow_new_data)
            if run_info.get("data_fingerprint", fingerprint) != fingerprint:
                # out-of-fold predictions of the old rows cannot be ensembled with the new ones
                shutil.rmtree(out / rundir.OOF_DIR, ignore_errors=True)
            storage = storage or rundir.own_storage(run_info.get("storage"), out)
            if args.study_name == "automl" and run_info.get("study_name"):
                args.study_name = run_info["study_name"]
        storage = storage or rundir.default_storage(out)
        run_info.update({"format": rundir.RUN_FORMAT, "storage": storage,
                         "study_name": args.study_name, "target": args.target,
                         "data": "-" if args.data == "-" else str(Path(args.data).resolve()),
                         "data_fingerprint": fingerprint, "text_backbone": backbone,
                         "automl": __version__, "pid": os.getpid()})
        atomic_write_text(out / RUN_FILE, json.dumps(run_info, indent=2))
        progress = make_progress(getattr(args, "progress", "auto"), config, quiet=args.quiet,
                                 start=start)
        try:
            result = engine.fit(X, target, config, target_name=args.target, storage_url=storage,
                                study_name=args.study_name, resume=args.resume, start=start,
                                callbacks=[progress], owned_storage=args.storage is None)
        except BaseException:
            progress.close()
            raise
        board = leaderboard(result.study, result.problem.metric.greater_is_better)
        summary = {**result.summary, "target": args.target, "data": str(args.data),
                   "storage": storage, "study_name": args.study_name, "sampler": config.sampler,
                   "pruner": config.pruner, "seed": config.seed, "time_budget": config.time_budget}
        save_model(result.model, out, extra={"summary": summary})
        write_csv(board, out / rundir.LEADERBOARD_FILE)
        summary["elapsed_s"] = round(time.monotonic() - start, 2)
        atomic_write_text(out / rundir.SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    except BaseException:
        output.restore()
        args.restored_output = output.restored
        raise
    finally:
        output.close()
    output.commit()
    progress.final(board, result, out)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from automl.images import read_predict_input
    from automl.leaderboard import escape_formulas
    from automl.persistence import atomic_write_text, load_model

    target = Path(args.output) if args.output not in (None, "-") else None
    if target is not None:
        if target.is_dir():
            raise ConfigError(f"--output '{target}' is a folder; give a file path, e.g. "
                              f"'{target / 'predictions.csv'}'.")
        if target.exists() and target.is_file() and not args.force:
            raise OutputExistsError(f"--output '{target}' already exists; pass --force to replace it "
                                    "or choose another file.")
        if args.data != "-" and target.exists() and target.resolve() == Path(args.data).resolve():
            raise ConfigError("--output is the input file; choose another file so the input is kept.")
        if not target.parent.is_dir():
            raise ConfigError(f"--output '{target}': folder '{target.parent}' does not exist; "
                              "create it or choose another path.")
    model = load_model(args.model)
    df, shown = read_predict_input(args.data, model.schema.columns_of("image"))
    preds = escape_formulas(pd.concat([df[shown], model.predict_frame(df)], axis=1))
    text = preds.to_csv(index=False)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()  # a full disk or closed pipe shows up here, not at exit
    elif target.exists() and not target.is_file():  # /dev/stdout, a named pipe: write through
        with target.open("w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        atomic_write_text(target, text)
        log.info("wrote %d predictions to %s", len(preds), target)
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
    except BrokenPipeError:  # `automl predict ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            raise
        problem = resource_problem(exc)
        if problem:
            print(f"automl: error: {problem}", file=sys.stderr)
            return ResourceError.exit_code
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"automl: internal error: {type(exc).__name__}: {msg} (rerun with --debug for details)",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


RESOURCE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space or choose another --output",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another --output",
    errno.EFBIG: "the file grew past the size this process may write (ulimit -f); raise the limit",
    errno.EROFS: "the file system is read-only; choose a writable --output",
    errno.EACCES: "check its permissions (or choose an --output folder you can write to)",
    errno.EPERM: "check its permissions (or choose an --output folder you can write to)",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.ENOMEM: "out of memory; free memory, or lower --memory-limit or --n-jobs",
}
_SQLITE_RESOURCE = {"database or disk is full": errno.ENOSPC,
                    "attempt to write a readonly database": errno.EROFS,
                    "unable to open database file": errno.EACCES}


def resource_problem(exc: BaseException) -> str | None:
    """A one-line description when ``exc`` (or what caused it) is the machine running out of
    disk, memory or permission, else None; such failures exit with status 3."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MemoryError):
            return f"out of memory ({type(cur).__name__}); {RESOURCE_ERRNOS[errno.ENOMEM].split('; ')[1]}"
        if isinstance(cur, OSError) and cur.errno in RESOURCE_ERRNOS:
            where = f" ('{cur.filename}')" if cur.filename else ""
            return f"{cur.strerror or os.strerror(cur.errno)}{where}: {RESOURCE_ERRNOS[cur.errno]}."
        text = str(cur).lower()
        for phrase, code in _SQLITE_RESOURCE.items():
            if phrase in text:
                return f"the study database cannot be written ({phrase}): {RESOURCE_ERRNOS[code]}."
        cur = cur.__cause__ or cur.__context__
    return None


def _sigterm_as_interrupt() -> Any:
    """Let `kill PID` stop a search as cleanly as Ctrl-C; returns the handler it replaced."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
