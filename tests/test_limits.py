"""Hard limits on trials: time budget, trial timeout, memory cap, and failure isolation.

The misbehaving learners come from :mod:`tests.fake_trainers` (``hang`` never returns,
``boom`` raises, ``nan`` predicts NaN, ``hog`` allocates 1 GB); CLI runs load them through
``AUTOML_PLUGINS``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import tests.fake_trainers  # noqa: F401 - registers the fake trainers in this process too
from automl import engine
from automl.config import SearchConfig
from automl.data import prepare_target
from automl.isolation import run_isolated
from automl.persistence import load_model
from tests.conftest import ROOT
from tests.runs import run_cli, tiny_csv


def _board(out):
    board = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    return {row["learner"]: row for _, row in board.iterrows()}


def test_time_budget_covers_a_hanging_trial_refit_and_saving(tmp_path):
    """--time-budget 15: the run ends within 15 s + max(10%, 5 s), process start to exit."""
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    t0 = time.monotonic()
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--time-budget",
        15,
        "--include",
        "logistic,hang",
        "--output",
        out,
    )
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert wall <= 15 + 5, f"the run took {wall:.1f}s"
    rows = _board(out)
    assert rows["hang"]["state"] == "fail" and "time limit" in rows["hang"]["fail_reason"]
    assert rows["logistic"]["state"] == "complete"
    assert json.loads((out / "summary.json").read_text())["elapsed_s"] <= 20
    assert load_model(out).description[0]["learner"] == "logistic"


def test_trial_timeout_stops_a_hanging_trial_and_the_search_goes_on(tmp_path):
    df = pd.read_csv(tiny_csv(tmp_path / "d.csv"))
    X, target = prepare_target(df, "y")
    cfg = SearchConfig(
        n_trials=2, time_budget=None, include=["hang", "logistic"], trial_timeout=2, ensemble=False
    )
    t0 = time.monotonic()
    res = engine.fit(X, target, cfg, target_name="y", storage_url=f"sqlite:///{tmp_path}/s.db")
    assert time.monotonic() - t0 < 60
    hang = [t for t in res.study.trials if t.params.get("learner") == "hang"]
    assert hang[0].state == TrialState.FAIL
    assert "time limit" in hang[0].user_attrs["fail_reason"]
    assert hang[0].duration.total_seconds() < 2 + 2 + 3  # timeout + kill grace + slack
    assert res.model.description[0]["learner"] == "logistic"


def _grow(total_mb: int, step_mb: int = 50, pause: float = 0.0):
    blocks = []
    for _ in range(total_mb // step_mb):
        blocks.append(np.ones(step_mb * 2**20 // 8))
        time.sleep(pause)
    return len(blocks)


@pytest.mark.parametrize("pause,how", [(0.0, "at once"), (0.15, "step by step")])
def test_memory_cap_stops_the_child_and_the_parent_survives(pause, how):
    """1 GB against a 300 MB cap: the address-space limit (at once) or the RSS watch (slowly)."""
    outcome = run_isolated(
        lambda: _grow(1000, pause=pause), deadline=time.monotonic() + 60, mem_cap_mb=300
    )
    assert outcome.status == "memory", outcome
    assert "memory" in outcome.reason.lower()
    if pause:
        assert "over the cap of 300 MB" in outcome.reason
    # the cap counts what the trial adds, not the pages it shares with the parent
    small = run_isolated(lambda: _grow(100), deadline=time.monotonic() + 60, mem_cap_mb=300)
    assert small.status == "ok" and small.value == 2


def test_the_parent_does_its_own_work_while_the_child_runs():
    """``meanwhile`` runs in the parent while it waits on the child (the controller records
    finished trials while the shared preprocessing runs), and once more after it started."""
    calls = []
    outcome = run_isolated(lambda: time.sleep(0.6) or "done", deadline=time.monotonic() + 30,
                           mem_cap_mb=None, meanwhile=lambda: calls.append(time.monotonic()))
    assert outcome.status == "ok" and outcome.value == "done"
    assert len(calls) >= 3  # at every poll (0.1 s) of a child that took 0.6 s


def test_memory_cap_is_not_fooled_by_the_parents_file_pages(tmp_path):
    """A parent with many library pages resident (CI's pytest after torch and friends): fork
    leaves file-backed pages out of the child's RSS, so RSS against the parent's undercounted
    the child by their size and the address-space backstop fired before the watch."""
    import mmap

    path = tmp_path / "pages.bin"
    path.write_bytes(b"\1" * (400 * 2**20))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as pages:
        assert sum(pages[i] for i in range(0, len(pages), 4096)) == len(pages) // 4096  # resident
        outcome = run_isolated(
            lambda: _grow(1000, pause=0.15), deadline=time.monotonic() + 60, mem_cap_mb=300
        )
    assert outcome.status == "memory", outcome
    assert "over the cap of 300 MB" in outcome.reason


def test_failing_trials_are_recorded_with_their_reason_and_the_search_goes_on(tmp_path):
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--n-trials",
        4,
        "--memory-limit",
        300,
        "--include",
        "logistic,boom,nan,hog",
        "--output",
        out,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    rows = _board(out)
    assert rows["logistic"]["state"] == "complete"
    reasons = {name: rows[name]["fail_reason"] for name in ("boom", "nan", "hog")}
    assert all(rows[name]["state"] == "fail" for name in reasons), reasons
    assert "learner exploded" in reasons["boom"]
    assert "nan" in reasons["nan"].lower()
    assert "memory" in reasons["hog"].lower()
    study = optuna.load_study(study_name="automl", storage=f"sqlite:///{out}/study.db")
    stored = {t.params.get("learner"): t.user_attrs.get("fail_reason", "") for t in study.trials}
    assert {k: stored[k] for k in reasons} == reasons
    assert load_model(out).description[0]["learner"] == "logistic"


def test_no_successful_trial_is_a_one_line_error(tmp_path):
    data = tiny_csv(tmp_path / "d.csv")
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--n-trials",
        2,
        "--include",
        "boom",
        "--output",
        tmp_path / "out",
    )
    assert res.returncode == 1, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert (
        errors[0].startswith("automl: error: no trial succeeded")
        and "learner exploded" in errors[0]
    )


FORK_AFTER_THREADED_FIT = """
import time
import numpy as np
import pandas as pd
from automl.config import SearchConfig
from automl.contracts import NullReporter
from automl.data import prepare_target
from automl.engine import prepare_problem
from automl.isolation import run_isolated
from automl.registry import get_trainer

rng = np.random.default_rng(0)
frame = pd.DataFrame(rng.normal(size=(20000, 8)), columns=[f"x{i}" for i in range(8)])
frame["y"] = frame.x0 * 2 + frame.x1 ** 2 + rng.normal(size=20000)
problem = prepare_problem(*prepare_target(frame, "y"), SearchConfig(n_trials=1).validate())
trainer = get_trainer("lightgbm")

def fit():
    data = problem.fit_data(0, seed=0, n_threads=2, deadline=time.monotonic() + 60)
    trainer.fit(dict(trainer.default(problem.info)), data, NullReporter())
    return data.n_threads

def in_child(job):
    o = run_isolated(job, deadline=time.monotonic() + 45, mem_cap_mb=None)
    return (o.status, o.reason, o.value)

def fit_then_fork():  # a child that ran threaded work forks a single-threaded grandchild
    return fit(), in_child(fit)

print("OUTCOME", repr(in_child(fit)), flush=True)
print("OUTCOME", repr(in_child(fit_then_fork)), flush=True)
print("OUTCOME", repr(("here", "", fit())), flush=True)
print("OUTCOME", repr(in_child(fit)), flush=True)
"""


def test_a_process_that_ran_threaded_work_forks_single_threaded_trials_not_hung_ones():
    """GNU OpenMP (shared by LightGBM and torch) cannot fork its thread pool: after this
    process fitted LightGBM with two threads (the API's in-process default), a forked trial
    asking for two threads hung until its deadline. Now it gets one, and a warning says why.
    In a fresh interpreter: the test process has run threaded work already."""
    done = subprocess.run([sys.executable, "-c", FORK_AFTER_THREADED_FIT], capture_output=True,
                          text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [x.removeprefix("OUTCOME ") for x in done.stdout.splitlines() if x.startswith("OUTCOME ")]
    assert [ast.literal_eval(x) for x in lines] == [
        ("ok", "", 2), ("ok", "", (2, ("ok", "", 1))), ("here", "", 2), ("ok", "", 1)]
    # once in the child that forked its own, once here
    assert done.stderr.count("trials it forks use one thread each") == 2
