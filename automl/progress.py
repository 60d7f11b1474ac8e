"""Progress during ``automl fit``: trials done, best score so far, time left, final leaderboard.

Four displays share one Optuna callback interface (``progress(study, trial)`` after each
trial, ``progress.final(board, result, out)`` once the model is saved, ``progress.close()``
if the run stops early):

- :class:`~automl.progress_live.RichProgress`: a live status on a terminal (stderr; rich's ``Progress``) with a
  line per finished trial above it, and the leaderboard as a table;
- :class:`PlainProgress`: one plain line per trial on stderr (pipes, log files, CI);
- :class:`JsonProgress`: one JSON object per trial on stdout, then a summary object;
- :class:`QuietProgress`: nothing (``--quiet``).

Callbacks run in the parent process only; trials finished by other workers (``--n-jobs``)
are read from the study and reported at the parent's next callback, so every trial is
reported exactly once. Trials finished before this process started (``--resume``) count
for the best score but are not reported again.

Example:
    >>> progress = make_progress("plain", SearchConfig(n_trials=5).validate())  # doctest: +SKIP
    >>> engine.fit(X, target, config, target_name="y", callbacks=[progress])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl import optuna_internals
from automl.study import own_params

log = logging.getLogger("automl")
MODES = ("auto", "rich", "plain", "json", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
BOARD_COLUMNS = ("rank", "trial", "learner", "state", "score", "fit_time_s", "balanced_accuracy",
                 "min_class_recall")


def as_number(value: Any) -> float | None:
    """A finite float for JSON, else None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.5g}"


def fmt_clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class BaseProgress:
    """Bookkeeping shared by the displays: which trials are new, the best so far, the clock."""

    def __init__(self, config: Any, quiet: bool = False, start: float | None = None) -> None:
        self.config = config
        self.quiet = quiet
        self.start = time.monotonic() if start is None else start
        # the wall-clock time of ``start``: trials completed before it belong to an earlier run
        self._start_wall = time.time() - (time.monotonic() - self.start)
        self.seen: set[int] = set()
        self.counts = {"complete": 0, "pruned": 0, "fail": 0}
        self.running = 0
        self.best: float | None = None
        self.best_trial: FrozenTrial | None = None
        self.maximize = False
        self.metric = ""
        self._first = True
        self.closed = False
        self.search_done = False

    # -- the clock -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def time_left(self) -> float | None:
        budget = getattr(self.config, "time_budget", None)
        return max(0.0, budget - self.elapsed()) if budget else None

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    # -- reading the study -----------------------------------------------------------------
    def _is_better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.maximize else value < self.best

    def poll(self, study: optuna.Study) -> Iterator[tuple[FrozenTrial, bool]]:
        """The trials finished since the last poll, oldest first, each with 'is a new best'
        (a generator: the counts and the best so far are up to date at each trial)."""
        if self._first:
            self.maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            self.metric = str(study.user_attrs.get("metric", "score"))
            self._first = False
        trials = study.get_trials(deepcopy=False)
        self.running = sum(t.state == TrialState.RUNNING for t in trials)
        new = [t for t in trials if t.state in FINISHED and t.number not in self.seen]
        new.sort(key=lambda t: (t.datetime_complete.timestamp() if t.datetime_complete else 0.0,
                                t.number))
        for t in new:
            self.seen.add(t.number)
            self.counts[t.state.name.lower()] += 1
            better = False
            value = as_number(t.value) if t.state == TrialState.COMPLETE else None
            if value is not None and self._is_better(value):
                self.best, self.best_trial, better = value, t, True
            done_at = t.datetime_complete.timestamp() if t.datetime_complete else None
            if done_at is None or done_at >= self._start_wall:  # not a trial of an earlier run
                yield t, better

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None) -> None:
        if self.closed:
            return
        for t, better in self.poll(study):
            self.on_trial(t, better)
        # the search's own callback runs first and stops the study when the budget is spent
        if trial is not None and optuna_internals.stop_requested(study) and not self.search_done:
            self.search_done = True
            self.on_search_done()

    def on_search_done(self) -> None:
        """The search has stopped; the final model is being fitted."""

    # -- what a display shows --------------------------------------------------------------
    def on_trial(self, trial: FrozenTrial, is_best: bool) -> None:
        """Show one finished trial."""

    def final(self, board: Any, result: Any, out: Path) -> None:
        """Show the leaderboard and where the model went."""
        self.close()

    def close(self) -> None:
        """Stop any live display (idempotent); called when the run ends or fails."""
        self.closed = True

    # helpers for the displays
    @staticmethod
    def learner(trial: FrozenTrial) -> str:
        return str(trial.params.get("learner", trial.user_attrs.get("learner", "?")))

    def best_text(self) -> str:
        if self.best_trial is None:
            return "best -"
        return f"best {fmt_score(self.best)} (#{self.best_trial.number} {self.learner(self.best_trial)})"

    def describe_best(self, result: Any, out: Path) -> str:
        """One line: the study's best trial, and the saved model (the best trial or an ensemble)."""
        metric = result.problem.metric.name
        best = self.best_trial
        members = result.model.description
        if best is None:  # no callback ran (e.g. a resumed search with nothing left to do)
            first = members[0]
            text = f"best: trial {first['trial']} {first['learner']} {metric}={first['score']:.5g}"
        else:
            text = f"best: trial {best.number} {self.learner(best)} {metric}={best.value:.5g}"
        if len(members) > 1:
            score = getattr(result.model, "validation_score", None)
            text += (f"; saved an ensemble of {len(members)} trials "
                     f"({', '.join(str(m['trial']) for m in members)})"
                     + (f", validation {metric}={score:.5g}" if score is not None else ""))
        return f"{text}; model saved in {out}/"


class QuietProgress(BaseProgress):
    """``--quiet``: shows nothing (warnings and errors still reach stderr through logging)."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None) -> None:
        return None


class PlainProgress(BaseProgress):
    """One line per finished trial on stderr, and the leaderboard as plain text."""

    def __init__(self, config: Any, quiet: bool = False, stream: Any = None,
                 start: float | None = None, show_trials: bool = True) -> None:
        super().__init__(config, quiet=quiet, start=start)
        self.stream = stream or sys.stderr
        self.show_trials = show_trials

    def on_trial(self, trial: FrozenTrial, is_best: bool) -> None:
        if self.quiet or not self.show_trials:
            return
        if trial.state == TrialState.COMPLETE:
            what = fmt_score(as_number(trial.value)) + ("  *best*" if is_best else "")
            if trial.user_attrs.get("train_rows"):  # a lower fidelity (automl.fidelity)
                what += f"  (trained on {int(trial.user_attrs['train_rows']):,} rows)"
        elif trial.state == TrialState.FAIL:
            what = f"failed: {str(trial.user_attrs.get('fail_reason', ''))[:80]}"
        else:
            what = trial.state.name.lower()
        left = self.time_left()
        tail = f", {left:.0f}s left" if left is not None else ""
        of = f"/{self.config.n_trials}" if getattr(self.config, "n_trials", None) else ""
        print(f"trial {trial.number:>4} {self.learner(trial):<14} {what}  "
              f"(done {self.done}{of}, {self.best_text()}{tail})", file=self.stream, flush=True)

    def on_search_done(self) -> None:
        if not self.quiet and self.show_trials:
            print(f"search done ({self.done} trials, {self.elapsed():.0f}s); fitting the final "
                  "model", file=self.stream, flush=True)

    def final(self, board: Any, result: Any, out: Path) -> None:
        self(result.study, None)  # trials that other workers finished last
        self.close()
        if self.quiet:
            return
        cols = [c for c in BOARD_COLUMNS if c in board.columns]
        direction = "higher" if result.problem.metric.greater_is_better else "lower"
        print(f"\nLeaderboard (top 10 of {len(board)}, metric: {result.problem.metric.name}, "
              f"{direction} is better)", file=self.stream)
        print(board[cols].head(10).to_string(index=False), file=self.stream)
        print(f"\n{self.describe_best(result, out)}", file=self.stream, flush=True)


class JsonProgress(BaseProgress):
    """One JSON object per finished trial on stdout, then one ``"event": "summary"`` object.

    A trial object: ``event, trial, learner, state, value, best, best_trial, is_best, done,
    elapsed, time_left, fit_time, params`` (and ``fail_reason`` for a failed trial). Numbers
    that are not finite are ``null``.
    """

    def __init__(self, config: Any, quiet: bool = False, stream: Any = None,
                 start: float | None = None) -> None:
        super().__init__(config, quiet=quiet, start=start)
        self.stream = stream or sys.stdout

    def emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps(record, allow_nan=False, default=str) + "\n")
        self.stream.flush()

    def on_trial(self, trial: FrozenTrial, is_best: bool) -> None:
        learner = self.learner(trial)
        record: dict[str, Any] = {
            "event": "trial", "trial": trial.number, "learner": learner,
            "state": trial.state.name.lower(),
            "value": as_number(trial.value) if trial.state == TrialState.COMPLETE else None,
            "best": self.best, "best_trial": self.best_trial.number if self.best_trial else None,
            "is_best": is_best, "done": self.done, "elapsed": round(self.elapsed(), 3),
            "time_left": None if self.time_left() is None else round(self.time_left() or 0.0, 3),
            "fit_time": as_number(trial.user_attrs.get("fit_time")),
            "params": own_params(trial.params, learner),
        }
        if trial.state == TrialState.FAIL:
            record["fail_reason"] = str(trial.user_attrs.get("fail_reason", ""))
        if trial.state == TrialState.PRUNED and trial.intermediate_values:
            record["pruned_at_step"] = max(trial.intermediate_values)
        self.emit(record)

    def final(self, board: Any, result: Any, out: Path) -> None:
        self(result.study, None)
        self.close()
        members = result.model.description
        best = ({"trial": self.best_trial.number, "learner": self.learner(self.best_trial),
                 "score": self.best_trial.value} if self.best_trial is not None else members[0])
        cols = [c for c in BOARD_COLUMNS if c in board.columns]
        rows = [{k: (as_number(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in board[cols].head(10).to_dict(orient="records")]
        self.emit({
            "event": "summary", "metric": result.problem.metric.name,
            "direction": result.problem.metric.direction, "best_trial": best["trial"],
            "learner": best["learner"], "score": as_number(best["score"]),
            "validation_score": as_number(getattr(result.model, "validation_score", None)),
            "ensemble": [{"trial": m["trial"], "learner": m["learner"],
                          "weight": as_number(m.get("weight"))} for m in members]
            if len(members) > 1 else None,
            "n_trials": self.done, "states": dict(self.counts), "elapsed": round(self.elapsed(), 3),
            "output": str(out), "leaderboard": rows,
        })


def make_progress(mode: str, config: Any, quiet: bool = False, start: float | None = None,
                  console: Any = None) -> BaseProgress:
    """The progress display for ``--progress MODE`` (auto: rich on a terminal, else plain).

    ``--quiet`` silences every mode but ``json``, whose lines on stdout were asked for.
    """
    if mode not in MODES:
        from automl.exceptions import ConfigError

        raise ConfigError(f"--progress got {mode!r}; choose one of: {', '.join(MODES)}.")
    if mode == "json":
        return JsonProgress(config, start=start)
    if quiet:
        return QuietProgress(config, quiet=True, start=start)
    if mode == "none":
        return PlainProgress(config, start=start, show_trials=False)
    if mode == "auto":
        from rich.console import Console

        probe = console or Console(stderr=True)
        mode = "rich" if probe.is_terminal and not probe.is_dumb_terminal else "plain"
    if mode == "rich":
        from automl.progress_live import RichProgress

        return RichProgress(config, console=console, start=start)
    return PlainProgress(config, start=start)
