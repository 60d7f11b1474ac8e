"""Progress during ``automl fit``: JSON lines, plain lines when piped, quiet, and a live
display on a terminal (a real pty), each on a real run; plus the bookkeeping on a study."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from automl.config import SearchConfig
from automl.progress import JsonProgress, PlainProgress, QuietProgress, make_progress
from automl.progress_live import RichProgress
from tests.conftest import AUTOML, EXAMPLE

FAST = ["--include", "logistic,knn", "--n-trials", "4"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LEARNER = {"learner": CategoricalDistribution(["logistic", "knn"])}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONWARNINGS": "ignore", "COLUMNS": "100"})
    env.pop("FORCE_COLOR", None)
    env.pop("NO_COLOR", None)
    return env


def _fit(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOML, "fit", str(EXAMPLE), "--target", "species", "--output", str(out),
                           *FAST, *extra], capture_output=True, text=True, timeout=240, env=_env(),
                          check=False)


def test_json_lines_mode_writes_one_object_per_trial_then_a_summary(tmp_path: Path) -> None:
    proc = _fit(tmp_path / "out", "--progress", "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # every line parses
    trials, summary = records[:-1], records[-1]
    assert [r["event"] for r in trials] == ["trial"] * len(trials)
    assert len(trials) == 4 and sorted(r["trial"] for r in trials) == [0, 1, 2, 3]
    for r in trials:
        assert {"trial", "learner", "state", "value", "best", "elapsed", "time_left",
                "done"} <= set(r)
        assert r["learner"] in ("logistic", "knn") and r["state"] in ("complete", "pruned", "fail")
        assert r["time_left"] is None  # a trial budget, no time budget
    assert [r["done"] for r in trials] == [1, 2, 3, 4]
    completed = [r["value"] for r in trials if r["state"] == "complete"]
    assert trials[-1]["best"] == pytest.approx(min(completed))  # log loss: lower is better
    assert summary["event"] == "summary" and summary["metric"] == "log_loss"
    assert summary["n_trials"] == 4 and summary["score"] == pytest.approx(min(completed))
    assert summary["leaderboard"][0]["rank"] == 1 and summary["output"].endswith("out")
    assert "trial " not in proc.stderr  # the human lines are not printed beside the JSON


def test_plain_lines_when_stderr_is_piped(tmp_path: Path) -> None:
    proc = _fit(tmp_path / "out", "--time-budget", "120")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("trial ")]
    assert len(lines) == 4, proc.stderr
    pattern = r"trial\s+0 (logistic|knn)\s+\d\.\d+.*\(done 1/4, best .*s left\)"
    assert re.search(pattern, lines[0]), lines[0]
    assert "\x1b[" not in proc.stderr  # no terminal codes in a pipe
    assert "Leaderboard (top 10 of 4, metric: log_loss, lower is better)" in proc.stderr
    assert re.search(r"best: trial \d+ (logistic|knn) log_loss=", proc.stderr)


@pytest.mark.slow  # ~8 s, a whole fit to check one flag
def test_quiet_prints_no_trial_lines(tmp_path: Path) -> None:
    proc = _fit(tmp_path / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "trial " not in proc.stderr and "Leaderboard" not in proc.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_live_display_on_a_terminal(tmp_path: Path) -> None:
    """Under a pseudo-terminal `--progress auto` picks the live display and a rich table."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    proc = subprocess.Popen([AUTOML, "fit", str(EXAMPLE), "--target", "species", "--output",
                             str(tmp_path / "out"), *FAST, "--time-budget", "120"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env={**_env(), "TERM": "xterm-256color"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    raw = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, raw[-2000:]
    assert "\x1b[" in raw  # colours and cursor movement: the live display ran
    text = ANSI.sub("", raw)
    assert "searching" in text and "trials" in text and "left" in text
    assert re.search(r"trial\s+0 (logistic|knn)", text)
    assert "Leaderboard: top 10 of 4 trials (log_loss, lower is better)" in text
    assert "┏" in text and "┃ rank" in text  # a rich table
    assert re.search(r"best: trial \d+ (logistic|knn) log_loss=", text)
    assert proc.stdout.read() == b""


# -- the bookkeeping, on studies built by hand --------------------------------------------

def _study(values: list[tuple[str, float | None, TrialState]]) -> optuna.Study:
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("metric", "log_loss")
    dists = {"learner": CategoricalDistribution(["logistic", "knn"]),
             "logistic__C": FloatDistribution(1e-3, 10, log=True)}
    for learner, value, state in values:
        params = {"learner": learner}
        if learner == "logistic":
            params["logistic__C"] = 1.0
        attrs = {"fail_reason": "boom"} if state == TrialState.FAIL else {}
        study.add_trial(create_trial(state=state, value=value, params=params, user_attrs=attrs,
                                     distributions={k: dists[k] for k in params}))
    return study


def test_trials_of_other_workers_are_reported_once_in_order() -> None:
    config = SearchConfig(n_trials=10).validate()
    buf = io.StringIO()
    progress = JsonProgress(config, stream=buf, start=time.monotonic() - 5)
    study = _study([("logistic", 0.5, TrialState.COMPLETE), ("knn", None, TrialState.FAIL)])
    progress(study, study.trials[-1])
    # two trials finish "in other workers" before the parent's next callback
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"learner": "knn"},
                                 distributions=LEARNER))
    study.add_trial(create_trial(value=0.25, params={"learner": "knn"}, distributions=LEARNER))
    progress(study, study.trials[-1])
    progress(study, study.trials[-1])  # nothing new: nothing printed
    records = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["trial"] for r in records] == [0, 1, 2, 3]
    assert [r["state"] for r in records] == ["complete", "fail", "pruned", "complete"]
    assert records[1]["fail_reason"] == "boom" and records[1]["value"] is None
    assert [r["best"] for r in records] == [0.5, 0.5, 0.5, 0.25]
    assert records[3]["is_best"] and records[3]["best_trial"] == 3


def test_trials_of_an_earlier_run_count_for_the_best_but_are_not_reported() -> None:
    study = _study([("logistic", 0.1, TrialState.COMPLETE)])  # finished "before this process"
    time.sleep(0.05)
    buf = io.StringIO()
    progress = PlainProgress(SearchConfig(time_budget=60).validate(), stream=buf)
    study.add_trial(create_trial(value=0.3, params={"learner": "knn"}, distributions=LEARNER))
    progress(study, study.trials[-1])
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trial    1 knn")
    assert "best 0.1 (#0 logistic)" in lines[0] and "s left" in lines[0]


def test_json_numbers_that_are_not_finite_become_null() -> None:
    buf = io.StringIO()
    progress = JsonProgress(SearchConfig(n_trials=3).validate(), stream=buf)
    study = _study([("logistic", float("inf"), TrialState.COMPLETE)])
    progress(study, study.trials[-1])
    record = json.loads(buf.getvalue())
    assert record["value"] is None and record["best"] is None


def _result(study: optuna.Study) -> SimpleNamespace:
    from automl.contracts import Task
    from automl.leaderboard import leaderboard
    from automl.metrics import get_metric

    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    model = SimpleNamespace(description=[{"trial": best.number, "learner": best.params["learner"],
                                          "score": best.value}], validation_score=None)
    problem = SimpleNamespace(metric=get_metric("log_loss", Task.MULTICLASS))
    return SimpleNamespace(study=study, model=model, problem=problem), leaderboard(study, False)


def test_rich_display_renders_status_trial_lines_and_a_table() -> None:
    from rich.console import Console

    console = Console(force_terminal=True, file=io.StringIO(), width=100, color_system="truecolor")
    progress = RichProgress(SearchConfig(time_budget=60).validate(), console=console)
    study = _study([("logistic", 0.4, TrialState.COMPLETE), ("knn", 0.2, TrialState.COMPLETE),
                    ("knn", None, TrialState.FAIL)])
    progress(study, study.trials[-1])
    status = Console(width=100, file=io.StringIO(), force_terminal=False)
    status.print(progress.render())
    text = status.file.getvalue()
    assert "searching" in text and "3 trials (1 failed)" in text and "best log_loss 0.2" in text
    assert re.search(r"\b(1:00|0:5\d) left", text)
    result, board = _result(study)
    progress.final(board, result, Path("out"))
    assert progress.live is None  # stopped
    out = ANSI.sub("", console.file.getvalue())
    assert "★ best" in out and "failed: boom" in out
    assert "Leaderboard: top 10 of 3 trials (log_loss, lower is better)" in out
    assert "best: trial 1 knn log_loss=0.2; model saved in out/" in out


def test_make_progress_picks_the_display() -> None:
    config = SearchConfig(n_trials=2).validate()
    assert isinstance(make_progress("json", config, quiet=True), JsonProgress)  # asked for
    assert isinstance(make_progress("auto", config, quiet=True), QuietProgress)
    assert isinstance(make_progress("plain", config), PlainProgress)
    from rich.console import Console

    piped = Console(file=io.StringIO())
    assert isinstance(make_progress("auto", config, console=piped), PlainProgress)
    tty = make_progress("auto", config, console=Console(file=io.StringIO(), force_terminal=True))
    assert isinstance(tty, RichProgress)
    tty.close()
    with pytest.raises(ValueError, match="--progress got 'fancy'"):
        make_progress("fancy", config)


def test_log_lines_print_through_the_live_display_and_the_handler_is_restored(capsys) -> None:
    import logging
    import sys

    from rich.console import Console

    handler = logging.StreamHandler(sys.stderr)  # as the CLI sets up: a handler on stderr
    logger = logging.getLogger("automl")
    logger.addHandler(handler)
    try:
        console = Console(file=sys.stderr, force_terminal=True, width=100)
        progress = RichProgress(SearchConfig(n_trials=2).validate(), console=console)
        assert handler.stream is not sys.stderr  # routed through the console while live
        logger.warning("a warning while searching")
        progress.close()
        assert handler.stream is sys.stderr
    finally:
        logger.removeHandler(handler)
    err = ANSI.sub("", capsys.readouterr().err)
    assert "a warning while searching" in err and "searching" in err
