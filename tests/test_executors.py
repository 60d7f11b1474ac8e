"""Executor choice and resources: what each executor honours, and what it refuses in one line."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest
from optuna.trial import TrialState

from automl import engine
from automl.config import SearchConfig
from automl.data import prepare_target
from automl.exceptions import ConfigError
from automl.executors import visible_gpus
from tests.conftest import ROOT
from tests.runs import run_cli, tiny_csv


@pytest.mark.parametrize("extra,needle", [
    (("--executor", "ray", "--n-jobs", "2"), "--n-jobs 2 cannot be combined with --executor ray"),
    (("--ray-address", "127.0.0.1:6379"), "--ray-address 127.0.0.1:6379 needs --executor ray"),
    (("--executor", "ray", "--no-isolation"), "--no-isolation cannot be combined with --executor ray"),
    (("--no-isolation", "--n-jobs", "2"), "--n-jobs 2 needs trials in their own processes"),
    (("--executor", "ray", "--accelerator", "gpu"), "needs --gpus-per-trial"),
])
def test_options_an_executor_cannot_honour_are_refused_in_one_line(tmp_path, extra, needle):
    data = tiny_csv(tmp_path / "d.csv")
    res = run_cli("fit", data, "--target", "y", "--n-trials", 2, "--output", tmp_path / "o", *extra)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.skipif(bool(visible_gpus()), reason="this machine has a GPU")
def test_gpus_per_trial_without_a_gpu_is_refused(tmp_path):
    data = tiny_csv(tmp_path / "d.csv")
    res = run_cli("fit", data, "--target", "y", "--n-trials", 2, "--gpus-per-trial", 1,
                  "--output", tmp_path / "o")
    assert res.returncode == 2 and "--gpus-per-trial 1 but this machine sees 0 GPU(s)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_missing_ray_extra_names_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from automl.cli import main\n"
            f"sys.exit(main(['fit', {str(ROOT / 'examples' / 'penguins.csv')!r}, '--target', "
            f"'species', '--executor', 'ray', '--n-trials', '1', '--output', {str(tmp_path / 'o')!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert "pip install 'automl[ray]'" in res.stderr and "Traceback" not in res.stderr


def test_local_children_share_gpus_by_fraction(tmp_path, monkeypatch):
    """Two (logical) GPUs, --gpus-per-trial 0.5, --n-jobs 4: each child sees one GPU, and
    trials are spread over both."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    X, target = prepare_target(pd.read_csv(tiny_csv(tmp_path / "d.csv")), "y")
    cfg = SearchConfig(n_trials=8, time_budget=None, include=["logistic"], n_jobs=4,
                       gpus_per_trial=0.5, cv="holdout", ensemble=False)
    res = engine.fit(X, target, cfg, target_name="y", storage_url=f"sqlite:///{tmp_path}/s.db")
    done = [t for t in res.study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 8
    seen = Counter(t.user_attrs["cuda_visible_devices"] for t in done)
    assert set(seen) == {"0", "1"}, seen
    with pytest.raises(ConfigError, match="sees 2 GPU"):
        engine.fit(X, target, SearchConfig(n_trials=1, time_budget=None, gpus_per_trial=3),
                   target_name="y", storage_url=f"sqlite:///{tmp_path}/t.db")


def test_the_python_api_takes_the_executor_options(tmp_path):
    from automl import AutoMLClassifier

    df = pd.read_csv(tiny_csv(tmp_path / "d.csv"))
    X, y = df.drop(columns="y"), df["y"]
    clf = AutoMLClassifier(n_trials=2, time_budget=None, include=["logistic"], executor="ray",
                           n_jobs=2)
    with pytest.raises(ConfigError, match="--n-jobs 2 cannot be combined with --executor ray"):
        clf.fit(X, y)
    clf = AutoMLClassifier(n_trials=2, time_budget=None, include=["logistic"], executor="inprocess",
                           cpus_per_trial=1).fit(X, y)
    assert len(clf.study_.trials) >= 2 and clf.get_params()["executor"] == "inprocess"
