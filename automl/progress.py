"""Progress during ``automl fit``: one line per finished trial, and the final leaderboard."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


class PlainProgress:
    """An Optuna callback printing trials done, best score so far and time left."""

    def __init__(self, config: Any, quiet: bool = False, stream: Any = None) -> None:
        self.config = config
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.quiet:
            return
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        try:
            best = f"{study.best_value:.5g}"
        except ValueError:
            best = "-"
        learner = trial.params.get("learner", "?")
        if trial.state == TrialState.COMPLETE:
            what = f"{trial.value:.5g}"
        elif trial.state == TrialState.FAIL:
            what = f"failed: {trial.user_attrs.get('fail_reason', '')[:80]}"
        else:
            what = trial.state.name.lower()
        left = ""
        if self.config.time_budget:
            left = f", {max(0.0, self.config.time_budget - (time.monotonic() - self.t0)):.0f}s left"
        print(f"trial {trial.number:>4} {learner:<14} {what}  (done {done}, best {best}{left})",
              file=self.stream, flush=True)

    def final(self, board: Any, result: Any, out: Path) -> None:
        if self.quiet:
            return
        cols = [c for c in ("rank", "trial", "learner", "state", "score", "fit_time_s",
                            "balanced_accuracy", "min_class_recall") if c in board.columns]
        print("\nLeaderboard (top 10, metric: %s)" % result.problem.metric.name, file=self.stream)
        print(board[cols].head(10).to_string(index=False), file=self.stream)
        best = result.model.description[0]
        print(f"\nbest: trial {best['trial']} {best['learner']} {result.problem.metric.name}="
              f"{best['score']:.5g}; model saved in {out}/", file=self.stream, flush=True)
