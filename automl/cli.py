"""The command line: ``automl fit``, ``automl predict`` and friends.

Bad input ends with one line on stderr naming the problem and the fix, exit status 2,
and no traceback (unless ``--debug``). Ctrl-C (or SIGTERM) exits with 130 and says how to
resume. ``AUTOML_PLUGINS`` (comma-separated module names) is imported first, e.g. to
register custom trainers with :func:`automl.registry.register`.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import gc
import importlib.util
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

from automl import __version__, interrupts, lean_import
from automl.cli_options import build_parser, csv_list, executor_options
from automl.exceptions import AutoMLError, ConfigError, OutputExistsError, ResourceError
from automl.rundir import RUN_FILE

log = logging.getLogger("automl")


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
    with interrupts.deferred():  # a Ctrl-C while importing counts once they are done: see _main
        # the search's modules while the table is read (automl.lean_import)
        imported = lean_import.in_background("automl.engine", "automl.persistence",
                                             "automl.leaderboard")
        from automl import rundir
        from automl.config import SearchConfig
        from automl.data import prepare_target, target_name
        from automl.images import read_fit_input
        from automl.progress import make_progress

    out = Path(args.output)
    config = SearchConfig(
        task=args.task, metric=args.metric, time_budget=args.time_budget, n_trials=args.n_trials,
        sampler=args.sampler, pruner=args.pruner, seed=args.seed, n_jobs=args.n_jobs,
        include=args.include, exclude=args.exclude, cv=args.cv, memory_limit_mb=args.memory_limit,
        trial_timeout=args.trial_timeout, isolate=not args.no_isolation, bagging=args.bagging,
        accelerator=args.accelerator, text_backbone=args.text_backbone, **executor_options(args),
    ).validate()
    # out-of-fold predictions live in the output folder, so a resumed run can still
    # ensemble the trials of the run it continues
    config.extra["oof_dir"] = str(out / rundir.OOF_DIR)
    df, args.target = read_fit_input(args.data, args.target, args.image_columns, config.extra)
    with interrupts.deferred():
        imported()
        from automl import engine
        from automl.leaderboard import leaderboard, write_csv
        from automl.persistence import atomic_write_text, save_model, skops_io
    # hashed beside the column inference; a resumed run checks it before anything else
    fingerprint_of = rundir.fingerprint_in_background(df)
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
        storage = _write_run_marker(args, out, fingerprint_of() if args.resume else None, backbone)
        progress = make_progress(getattr(args, "progress", "auto"), config, quiet=args.quiet,
                                 start=start)
        try:
            problem = engine.prepare_problem(X, target, config)
            if not args.resume:  # before the first fork (a thread at a fork is unsafe)
                _record_fingerprint(out, fingerprint_of())
            # the read table and its raw features are not needed any more: freed before the
            # trial processes fork, which would each keep them mapped (issue 12: memory)
            del df, X, target
            gc.collect()
            # the members stay in their files until saved, one at a time (issue 12: memory)
            result = engine.fit_problem(problem, config, target_name=args.target,
                                        storage_url=storage, study_name=args.study_name,
                                        resume=args.resume, start=start, callbacks=[progress],
                                        owned_storage=args.storage is None, lazy_members=True,
                                        # inside the budget (a second), after the first result
                                        warm_up=[skops_io])
        except BaseException:
            progress.close()
            raise
        try:
            board = leaderboard(result.study, result.problem.metric.greater_is_better)
            summary = {**result.summary, "target": args.target, "data": str(args.data),
                       "storage": storage, "study_name": args.study_name,
                       "sampler": config.sampler, "pruner": config.pruner, "seed": config.seed,
                       "time_budget": config.time_budget}
            t0 = time.monotonic()
            save_model(result.model, out, extra={"summary": summary})
            log.debug("model saved in %.2fs, %.1fs after the process started", time.monotonic() - t0,
                      time.monotonic() - start)
        finally:
            result.close()
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


def _write_run_marker(args: argparse.Namespace, out: Path, fingerprint: dict[str, Any] | None,
                      backbone: str) -> str:
    """Check a resumed run's data and text backbone against its marker, then write the
    marker (``run.json``) for this run; return the study's storage URL. A new run's
    ``fingerprint`` (None) is added by :func:`_record_fingerprint` once known."""
    from automl import rundir
    from automl.persistence import atomic_write_text

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
    return storage


def _record_fingerprint(out: Path, fingerprint: dict[str, Any]) -> None:
    """Add the data's fingerprint to the run marker (a later ``--resume`` checks it)."""
    from automl import rundir
    from automl.persistence import atomic_write_text

    run_info = rundir.read_json(out / RUN_FILE) or {}
    run_info["data_fingerprint"] = fingerprint
    atomic_write_text(out / RUN_FILE, json.dumps(run_info, indent=2))


def cmd_predict(args: argparse.Namespace) -> int:
    with interrupts.deferred():  # see _main
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
    if importlib.util.find_spec("torch") is not None:
        # this process forks nothing, so its networks may use every core it has (a search
        # process predicts on one thread: see automl.isolation.torch_threads)
        from trainers.torch_estimator import TorchEstimator

        TorchEstimator.predict_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
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

    for name in csv_list(os.environ.get("AUTOML_PLUGINS", "")):
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
    if argv is None and hasattr(signal, "SIGUSR1"):
        # `kill -USR1 PID` prints where every thread of a stuck run is, and the run goes on
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command started (imports) or while reporting
        print("automl: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    # OMP_WAIT_POLICY is the user's: the CLI used to set PASSIVE, which puts OpenMP threads
    # to sleep at every barrier, and LightGBM meets several a boosting round (its first
    # trial on 100,000 flights rows took 31 s instead of 8: benchmarks/omp_wait.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args)
    previous = _sigterm_as_interrupt() if args.command == "fit" else None
    try:
        # A Ctrl-C in the middle of importing a compiled module can come out as that module's
        # ImportError ("initialization failed": pybind11 modules in scipy and matplotlib), which
        # would read as a broken plugin or a missing extra; inside deferred() it is raised as
        # the interrupt it was once the imports are done (a second Ctrl-C still stops at once)
        with interrupts.deferred():
            if args.command in ("fit", "predict"):  # before anything imports pandas
                lean_import.import_pandas(without_pyarrow=lean_import.small_csv(args.data))
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
