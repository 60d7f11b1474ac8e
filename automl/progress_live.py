"""The live progress display of ``automl fit`` on a terminal (rich), beside the plain,
JSON and quiet ones in :mod:`automl.progress`."""

from __future__ import annotations

import atexit
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, Progress, SpinnerColumn, Task, TextColumn

from automl.progress import BOARD_COLUMNS, BaseProgress, as_number, fmt_clock, fmt_score, log

RICH_HEADERS = {"fit_time_s": "fit s", "balanced_accuracy": "bal. acc",
                "min_class_recall": "min recall"}


class RichProgress(BaseProgress):
    """A live status (spinner, budget bar, time left; trials and best below) on a terminal,
    a line per finished trial above it, and the final leaderboard as a table.

    The live part is rich's :class:`~rich.progress.Progress` (:class:`_SearchBar`). While it
    runs, the logging handlers that write to stderr (automl's, and the root logger's for
    other libraries) write through the console, so their lines print above it too.
    """

    def __init__(self, config: Any, quiet: bool = False, console: Any = None,
                 start: float | None = None, refresh_per_second: float = 4) -> None:
        from rich.console import Console

        super().__init__(config, quiet=quiet, start=start)
        self.console = console or Console(stderr=True)
        self.bar = _SearchBar(self, refresh_per_second)
        self.live: _SearchBar | None = None
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._start_live()

    def _start_live(self) -> None:
        from rich.file_proxy import FileProxy

        self.live = self.bar
        self.live.start()
        stderr = (sys.stderr, sys.__stderr__)
        if self.console.file in stderr:
            for h in [*log.handlers, *logging.getLogger().handlers]:
                if isinstance(h, logging.StreamHandler) and h.stream in stderr:
                    self._handlers.append((h, h.setStream(FileProxy(self.console, h.stream))))
        atexit.register(self.close)

    def render(self) -> Any:
        """What the live display shows now."""
        return self.bar.get_renderable()

    def status(self) -> dict[str, Any]:
        """The live task's fields: phase, bar (time or trials of the budget), clock."""
        budget = getattr(self.config, "time_budget", None)
        n_trials = getattr(self.config, "n_trials", None)
        elapsed = self.elapsed()
        total, completed = ((budget, min(elapsed, budget)) if budget else
                            (n_trials, min(self.done, n_trials)) if n_trials else (None, 0))
        left = None if self.search_done else self.time_left()
        clock = f"{fmt_clock(left)} left" if left is not None else f"{fmt_clock(elapsed)} elapsed"
        return {"description": "fitting the final model" if self.search_done else "searching",
                "total": total, "completed": completed,
                "clock": f"[yellow]{clock}[/]" if left is not None and left < 10 else clock}

    def counts_line(self) -> Any:
        """The line under the bar: trials done (pruned, failed, running) and the best so far."""
        from rich.text import Text

        n_trials = getattr(self.config, "n_trials", None)
        stats = Text("  ")
        stats.append(f"{self.done}{f'/{n_trials}' if n_trials else ''} trials", style="bold")
        extra = [f"{n} {s}" for s, n in (("pruned", self.counts["pruned"]),
                                         ("failed", self.counts["fail"]),
                                         ("running", self.running)) if n]
        if extra:
            stats.append(f" ({', '.join(extra)})", style="dim")
        stats.append("   best ")
        if self.best_trial is not None:
            stats.append(f"{self.metric} {fmt_score(self.best)}", style="bold green")
            stats.append(f"  #{self.best_trial.number} {self.learner(self.best_trial)}",
                         style="dim")
        else:
            stats.append("-")
        return stats

    def on_trial(self, trial: FrozenTrial, is_best: bool) -> None:
        from rich.text import Text

        line = Text()
        line.append(f"trial {trial.number:>4} ", style="dim")
        line.append(f"{self.learner(trial):<14} ")
        if trial.state == TrialState.COMPLETE:
            line.append(fmt_score(as_number(trial.value)), style="bold green" if is_best else "")
            if is_best:
                line.append("  ★ best", style="green")
        elif trial.state == TrialState.PRUNED:
            line.append("pruned", style="yellow")
        else:
            line.append("failed", style="red")
            reason = str(trial.user_attrs.get("fail_reason", ""))[:100]
            if reason:
                line.append(f": {reason}", style="dim red")
        fit = as_number(trial.user_attrs.get("fit_time"))
        if fit is not None:
            line.append(f"  {fit:.1f}s", style="dim")
        self.console.print(line)

    def close(self) -> None:
        if self.live is not None:
            try:
                self.live.stop()
            finally:
                self.live = None
                for h, stream in self._handlers:
                    h.setStream(stream)
                self._handlers.clear()
                atexit.unregister(self.close)
        super().close()

    def final(self, board: Any, result: Any, out: Path) -> None:
        from rich.table import Table

        self(result.study, None)
        self.close()
        metric = result.problem.metric
        title = (f"Leaderboard: top 10 of {len(board)} trials ({metric.name}, "
                 f"{'higher' if metric.greater_is_better else 'lower'} is better)")
        table = Table(header_style="bold")
        cols = [c for c in BOARD_COLUMNS if c in board.columns]
        for c in cols:
            table.add_column(RICH_HEADERS.get(c, c),
                             justify="left" if c in ("learner", "state") else "right")
        members = {m["trial"] for m in result.model.description}
        for row in board[cols].head(10).to_dict(orient="records"):
            cells = [("" if math.isnan(v) else f"{v:.5g}") if isinstance(v, float) else str(v)
                     for v in row.values()]
            style = "bold green" if row.get("trial") in members else (
                "dim" if row.get("state") != "complete" else None)
            table.add_row(*cells, style=style)
        self.console.print()
        self.console.print(title, style="bold", highlight=False)
        self.console.print(table)
        self.console.print(self.describe_best(result, out), style="bold", highlight=False)


class _Spinner(SpinnerColumn):
    """A spinner that keeps turning when the bar is full (the final model is still fitting)."""

    def render(self, task: Task) -> Any:
        return self.spinner.render(task.get_time())


class _SearchBar(Progress):
    """rich's Progress with one task, the search: spinner, phase, budget bar, clock; and the
    trial counts on a line below (the fields are read from the display at each refresh)."""

    def __init__(self, display: RichProgress, refresh_per_second: float) -> None:
        self.display = display  # before Progress.__init__, which renders once
        super().__init__(_Spinner("dots", style="cyan"),
                         TextColumn("{task.description}", style="cyan"), BarColumn(bar_width=30),
                         TextColumn("{task.fields[clock]}"),
                         console=display.console, transient=True,
                         refresh_per_second=refresh_per_second, redirect_stdout=False,
                         redirect_stderr=False)
        self.add_task("searching", clock="")

    def get_renderables(self) -> Iterator[Any]:
        for task in self.tasks:
            self.update(task.id, **self.display.status())
        yield self.make_tasks_table(self.tasks)
        yield self.display.counts_line()
