"""Several worker processes on one study (SQLite): none lost, none repeated, none left running."""

from __future__ import annotations

import json

from optuna.trial import TrialState

from automl.persistence import load_model
from tests.runs import (
    check_no_repeats,
    load_trials,
    plugin_env,
    run_cli,
    start_cli,
    stderr_of,
    tiny_csv,
    wait_until,
)


def _check_study(trials, n_trials: int, n_processes: int, min_workers: int) -> None:
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state) for t in trials]
    finished = sum(t.state.is_finished() for t in trials)
    # each process stops once the study holds n_trials finished trials; others may be mid-trial
    assert n_trials <= finished <= n_trials + n_processes - 1, finished
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= n_trials // 2
    workers = {t.user_attrs.get("worker") for t in trials if t.user_attrs.get("worker")}
    assert len(workers) >= min_workers, workers
    check_no_repeats(trials)


def test_n_jobs_workers_share_the_study(tmp_path):
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    res = run_cli(
        "fit",
        data,
        "--target",
        "y",
        "--n-trials",
        6,
        "--n-jobs",
        2,
        "--include",
        "logistic",
        "--output",
        out,
    )
    assert res.returncode == 0, res.stderr
    _check_study(load_trials(f"sqlite:///{out}/study.db"), 6, 2, 2)
    assert load_model(out).task.value == "binary"


def test_two_commands_join_one_study(tmp_path):
    """A second ``automl fit --resume`` on the same --storage/--study-name joins the search.

    Three processes (one, then two more from ``--n-jobs 2``) write to one SQLite file.
    """
    data = tiny_csv(tmp_path / "d.csv")
    url = f"sqlite:///{tmp_path}/shared.db"
    common = (
        "fit",
        data,
        "--target",
        "y",
        "--include",
        "sleepy",
        "--storage",
        url,
        "--study-name",
        "shared",
        "--n-trials",
        16,
    )
    env = plugin_env(AUTOML_TEST_SLEEP_S="0.2")
    first = start_cli(*common, "--output", tmp_path / "a", log_dir=tmp_path, name="a", env=env)
    wait_until(lambda: len(load_trials(url, "shared")) >= 2, 90, "the first trials", first)
    # without --resume the second command refuses to touch the existing study
    res = run_cli(*common, "--output", tmp_path / "b0", env=env)
    assert res.returncode == 2 and "--resume" in res.stderr and "Traceback" not in res.stderr
    second = start_cli(
        *common,
        "--output",
        tmp_path / "b",
        "--resume",
        "--n-jobs",
        2,
        log_dir=tmp_path,
        name="b",
        env=env,
    )
    assert second.wait(timeout=240) == 0, stderr_of(tmp_path, "b")
    assert first.wait(timeout=240) == 0, stderr_of(tmp_path, "a")
    trials = load_trials(url, "shared")
    _check_study(trials, 16, 3, 3)
    for name in ("a", "b"):
        assert load_model(tmp_path / name).description[0]["learner"] == "sleepy"
        run_info = json.loads((tmp_path / name / "run.json").read_text())
        assert run_info["storage"] == url and run_info["study_name"] == "shared"
        assert "Traceback" not in stderr_of(tmp_path, name)


def _hammer(url: str, n: int) -> None:
    import optuna

    from automl.study import make_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(
        study_name="hammer", storage=make_storage(url), sampler=optuna.samplers.RandomSampler()
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def test_sqlite_storage_under_write_load(tmp_path):
    """Four processes writing trials as fast as they can: SQLite's lock waits, never fails."""
    import multiprocessing as mp

    import optuna

    from automl.study import make_storage

    url = f"sqlite:///{tmp_path}/load.db"
    optuna.create_study(study_name="hammer", storage=make_storage(url))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(url, 40)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    trials = load_trials(url, "hammer")
    assert len(trials) == 160 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(160))
