"""``automl fit --resume`` after a kill (SIGKILL) or Ctrl-C (SIGINT), with real processes.

The search runs the ``sleepy`` fake trainer (logistic regression taking ~0.4 s per fold),
so a trial is nearly always running when the signal arrives.
"""

from __future__ import annotations

import os
import shlex
import signal
import time

import pandas as pd
import pytest
from optuna.trial import TrialState

from automl.persistence import load_model
from tests.runs import (
    check_dead_trials_rerun,
    check_no_repeats,
    exit_status,
    load_trials,
    n_state,
    params_key,
    plugin_env,
    run_cli,
    start_cli,
    stderr_of,
    tiny_csv,
    wait_group_gone,
    wait_until,
)


def _start_and_wait(tmp_path, extra=()):
    data = tiny_csv(tmp_path / "d.csv")
    out = tmp_path / "out"
    url = f"sqlite:///{out}/study.db"
    proc = start_cli(
        "fit",
        data,
        "--target",
        "y",
        "--time-budget",
        60,
        "--include",
        "sleepy",
        "--output",
        out,
        *extra,
        log_dir=tmp_path,
    )

    def ready():
        trials = load_trials(url)
        return (
            n_state(trials, TrialState.COMPLETE) >= 2 and n_state(trials, TrialState.RUNNING) >= 1
        )

    wait_until(ready, 90, "2 completed trials and a running one", proc)
    return proc, data, out, url


def _check_resumed(before, after, out, data):
    """Completed trials kept as they were, each interrupted one retried once, model valid."""
    by_number = {t.number: t for t in after}
    for t in before:
        if t.state == TrialState.COMPLETE:
            kept = by_number[t.number]
            assert kept.state == TrialState.COMPLETE and kept.value == t.value
            assert params_key(kept) == params_key(t)
    assert all(t.state.is_finished() for t in after), [(t.number, t.state) for t in after]
    check_no_repeats(after)
    for t in before:
        if t.state == TrialState.RUNNING or t.user_attrs.get("interrupted"):
            assert by_number[t.number].state == TrialState.FAIL
            assert by_number[t.number].user_attrs.get("fail_reason")
    check_dead_trials_rerun([t.number for t in before if t.state == TrialState.RUNNING
                             or t.user_attrs.get("interrupted")], after)
    model = load_model(out)
    df = pd.read_csv(data)
    assert (model.predict(df.drop(columns="y")) == df["y"]).mean() > 0.6
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == sum(t.state.is_finished() for t in after)


def test_resume_after_sigkill(tmp_path):
    proc, data, out, url = _start_and_wait(tmp_path, extra=("--n-jobs", 2))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the trial children and the second worker die with it (no orphans burning CPU)
    wait_group_gone(proc.pid)
    before = load_trials(url)
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert running and n_state(before, TrialState.COMPLETE) >= 2
    assert not (out / "manifest.json").exists()

    n_total = len(before) + len(running) + 2  # the retries and two new trials
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--include",
        "sleepy",
        "--output",
        out,
        "--resume",
        "--n-trials",
        n_total,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    # every one, also a trial the kill left before it was tagged with its worker
    assert f"{len(running)} trial(s) of a dead process marked failed" in res.stderr, (
        res.stderr, [(t.number, t.user_attrs, t.system_attrs) for t in running])
    after = load_trials(url)
    for t in running:
        assert "died" in {a.number: a for a in after}[t.number].user_attrs["fail_reason"]
    _check_resumed(before, after, out, data)
    assert sum(t.state.is_finished() for t in after) >= n_total


def test_ctrl_c_exits_130_then_resume(tmp_path):
    proc, data, out, url = _start_and_wait(tmp_path, extra=("--n-jobs", 2))
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    assert exit_status(proc, tmp_path) == 130
    wait_group_gone(proc.pid)
    err = stderr_of(tmp_path)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err
    assert lines[0].startswith("automl: interrupted; resume with: automl fit ")
    before = load_trials(url)
    interrupted = [t for t in before if t.user_attrs.get("interrupted")]
    assert interrupted, [(t.number, t.state, t.user_attrs) for t in before]
    assert all(t.state == TrialState.FAIL for t in interrupted)

    # run exactly the command the message suggests (plus a number of trials)
    words = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert words[0] == "automl" and "--resume" in words
    n_total = len(before) + 2 * len(interrupted) + 2
    res = run_cli(*words[1:], "--n-trials", n_total)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    _check_resumed(before, load_trials(url), out, data)


def test_resume_needs_a_run_to_continue(tmp_path):
    data = tiny_csv(tmp_path / "d.csv")
    res = run_cli("fit", data, "--target", "y", "--output", tmp_path / "none", "--resume")
    assert res.returncode == 2 and "nothing to resume" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_resumed_search_draws_new_configurations(tmp_path):
    """A resumed (or joining) process must not replay the first run's random stream."""
    from automl import engine
    from automl.config import SearchConfig
    from automl.data import prepare_target

    df = pd.read_csv(tiny_csv(tmp_path / "d.csv"))
    X, target = prepare_target(df, "y")
    url = f"sqlite:///{tmp_path}/s.db"
    for n_trials, resume in ((4, False), (8, True)):
        cfg = SearchConfig(
            n_trials=n_trials,
            time_budget=None,
            include=["logistic"],
            sampler="random",
            isolate=False,
            ensemble=False,
        )
        res = engine.fit(X, target, cfg, target_name="y", storage_url=url, resume=resume)
    assert len(res.study.trials) == 8
    check_no_repeats(res.study.trials)


@pytest.mark.parametrize(
    "delay,sig,group",
    [(1.0, signal.SIGINT, True), (4.0, signal.SIGINT, True), (4.0, signal.SIGTERM, False)],
    ids=["ctrl-c-early", "ctrl-c-late", "kill-pid"],
)
def test_interrupt_at_any_moment_exits_cleanly(tmp_path, delay, sig, group):
    """Early (imports, data loading) or late, Ctrl-C or `kill PID`: status 130, no traceback."""
    data = tiny_csv(tmp_path / "d.csv")
    args = ("fit", data, "--target", "y", "--time-budget", 60, "--include", "sleepy")
    proc = start_cli(*args, "--output", tmp_path / "out", log_dir=tmp_path)
    time.sleep(delay)
    if group:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    assert exit_status(proc, tmp_path) == 130
    wait_group_gone(proc.pid)
    err = stderr_of(tmp_path)
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("automl: interrupted"), err


def test_ctrl_c_while_a_compiled_module_loads_is_an_interrupt_not_an_import_error(tmp_path):
    """pybind11 reports a Ctrl-C during a compiled module's initialisation as ImportError
    ("initialization failed"); a cold first make test printed that as a broken plugin, exit 2."""
    data = tiny_csv(tmp_path / "d.csv")
    mark = tmp_path / "importing"
    env = plugin_env(AUTOML_PLUGINS="tests.fake_trainers,tests.slow_import_plugin",
                     AUTOML_TEST_IMPORTING=str(mark))
    proc = start_cli("fit", data, "--target", "y", "--time-budget", 60, "--include", "sleepy",
                     "--output", tmp_path / "out", log_dir=tmp_path, env=env)
    wait_until(mark.exists, 60, "the plugin's import to start", proc, poll=0.05)
    time.sleep(0.5)  # inside the plugin's 3 s import
    os.killpg(proc.pid, signal.SIGINT)
    assert exit_status(proc, tmp_path) == 130, stderr_of(tmp_path)
    wait_group_gone(proc.pid)
    err = stderr_of(tmp_path)
    assert err.strip().splitlines()[-1].startswith("automl: interrupted"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_resuming_processes_fail_a_dead_trial_once(tmp_path, monkeypatch):
    """Both see the dead worker's RUNNING trial; only the first fails and re-queues it."""
    import optuna

    from automl import study as study_mod

    study = optuna.create_study(storage=study_mod.make_storage(f"sqlite:///{tmp_path}/s.db"))
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("worker", f"{study_mod.socket.gethostname()}:{_dead_pid()}")
    trial.set_user_attr("learner", "x")  # what the objective records once sampling is done
    stale = study.get_trials(states=(TrialState.RUNNING,))
    assert study_mod.fail_dead_trials(study) == (1, 1)
    monkeypatch.setattr(study, "get_trials", lambda deepcopy=True, states=None: stale)
    assert study_mod.fail_dead_trials(study) == (0, 0)  # the other process got there first
    monkeypatch.undo()
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[1].user_attrs["retry_of"] == 0


def test_a_trial_records_its_worker_as_soon_as_optuna_creates_it(tmp_path):
    """A process killed between ``ask`` and the objective leaves a RUNNING trial whose worker
    is known, so a resume fails it at once; Ctrl-C in that gap marks it interrupted."""
    import optuna

    from automl import study as study_mod

    for name in ("tpe", "random", "grid", "gp", "cmaes", "qmc"):
        study = optuna.create_study(storage=f"sqlite:///{tmp_path}/{name}.db",
                                    sampler=study_mod.make_sampler(name, 0))
        trial = study.ask()  # no objective has run: only the sampler's before_trial
        stored = study._storage.get_trial(trial._trial_id)
        assert stored.user_attrs["worker"] == study_mod.worker_id(), name
        assert stored.user_attrs["driver"] == study_mod.worker_id(), name
        assert trial.suggest_categorical("x", [1, 2, 3]) in (1, 2, 3)  # it still samples
    assert study_mod.fail_own_running_trials(study, "interrupted (Ctrl-C)") == 1
    (failed,) = study.get_trials(states=(TrialState.FAIL,))
    assert failed.user_attrs["interrupted"] and failed.user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    # another process's running trial is not ours to fail
    other = study.ask()
    study._storage.set_trial_user_attr(other._trial_id, "driver", "elsewhere:1")
    assert study_mod.fail_own_running_trials(study, "x") == 0


def _dead_pid() -> int:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_while_sampling_runs_again_only_as_far_as_it_was_configured(tmp_path):
    """A process can die between two ``suggest`` calls: its trial holds part of a
    configuration. A queued configuration goes back into the queue whole; a half-drawn
    one is dropped (re-running it would mix old and new draws under one retry)."""
    import optuna

    from automl import study as study_mod

    study = optuna.create_study(storage=study_mod.make_storage(f"sqlite:///{tmp_path}/s.db"),
                                sampler=study_mod.make_sampler("random", 0))
    dead = f"{study_mod.socket.gethostname()}:{_dead_pid()}"
    study.enqueue_trial({"learner": "a", "a__x": 3}, user_attrs={"queued": "default"})
    space = {"learner": optuna.distributions.CategoricalDistribution(["a", "b"]),
             "a__x": optuna.distributions.IntDistribution(1, 9)}
    for _ in range(3):  # queued / drawn / drawn and complete: each dies after its first suggest
        trial = study.ask()
        trial.suggest_categorical("learner", ["a", "b"])
        trial.set_user_attr("driver", dead)
    trial.suggest_int("a__x", 1, 9)
    trial.set_user_attr("learner", trial.params["learner"])
    assert study_mod.fail_dead_trials(study) == (3, 2)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs for t in waiting] == [{"requeue_of": 0, "queued": "default"},
                                               {"retry_of": 2}]
    assert waiting[0].system_attrs["fixed_params"] == {"learner": "a", "a__x": 3}
    assert waiting[1].system_attrs["fixed_params"] == study.trials[2].params
    again = [study.ask(space) for _ in range(2)]
    assert again[0].params == {"learner": "a", "a__x": 3}
    assert again[1].params == study.trials[2].params
    for t in again:  # a requeue or retry that dies as well is not queued a third time
        t.set_user_attr("driver", dead)
    assert study_mod.fail_dead_trials(study) == (2, 0)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_whose_process_ended_is_its_live_drivers_to_finish(tmp_path):
    """The local executor's trial child exits once it has sent its result, and the trial
    stays RUNNING until its driver records it. Another process resuming the same study in
    that moment failed it as dead (its ``worker`` was the child's PID), and the driver then
    crashed on the finished trial (``UpdateFinishedTrialError``, seen in CI)."""
    import optuna

    from automl import study as study_mod

    study = optuna.create_study(storage=study_mod.make_storage(f"sqlite:///{tmp_path}/s.db"),
                                sampler=study_mod.make_sampler("random", 0))
    trial = study.ask()  # this (live) process is its driver
    trial.set_user_attr("worker", f"{study_mod.socket.gethostname()}:{_dead_pid()}")
    assert study_mod.fail_dead_trials(study) == (0, 0)
    study.tell(trial, 0.5)
    assert study.trials[0].state == TrialState.COMPLETE


def test_a_zombie_worker_counts_as_dead():
    """A worker that died but is not reaped yet (its parent was killed) is a zombie:
    signal 0 still reaches it, yet its trials must be failed on resume."""
    import subprocess
    import sys

    from automl import study as study_mod

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: study_mod.psutil.Process(child.pid).status() == "zombie", 10, "a zombie")
    os.kill(child.pid, 0)  # still "exists"
    assert not study_mod._alive(child.pid)
    assert study_mod._alive(os.getpid())
    child.wait()


def test_a_resumed_study_keeps_the_validation_its_trials_were_scored_with(tmp_path):
    """With --cv auto the validation depends on the time budget (automl.splits.auto_folds):
    a resume with a larger budget must not score its trials on other splits."""
    import numpy as np

    from automl.config import SearchConfig
    from automl.data import prepare_target
    from automl.engine import prepare_problem
    from automl.opening import open_study

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(12_000, 4)), columns=list("abcd"))
    frame["target"] = frame["a"] * 2 + rng.normal(size=len(frame))
    X, t = prepare_target(frame, "target")
    url = f"sqlite:///{tmp_path}/s.db"
    short, long = SearchConfig(time_budget=10).validate(), SearchConfig(time_budget=300).validate()
    first = prepare_problem(X, t, short)
    assert first.splits.kind == "holdout"  # 48,000 cells over 2,500 a second of 10 s
    open_study(short, first, url, "s", False, "target")
    again = prepare_problem(X, t, long)
    assert again.splits.kind == "cv"  # within 2,500 a second of 300 s
    open_study(long, again, url, "s", True, "target")
    assert again.splits.describe() == first.splits.describe()
    assert again.info.n_train_rows == first.info.n_train_rows
    np.testing.assert_array_equal(again.splits.folds[0][1], first.splits.folds[0][1])
