"""The Ray executor on a real multi-node Ray cluster on loopback, as Ray's own tests run one.

``ray.cluster_utils.Cluster`` starts a head node (no CPUs: trials run on the worker nodes
each test adds) and worker nodes as separate raylets on this machine, every listener on
127.0.0.1 (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), with token authentication
(``RAY_AUTH_TOKEN``). ``automl fit --executor ray --ray-address`` runs as a real process.
Only what these tests start is stopped, through the cluster object (never ``ray stop``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import tempfile

import pytest
from optuna.trial import TrialState

from automl.persistence import load_model
from automl.study import configured as study_configured
from tests.conftest import ROOT
from tests.runs import (
    exit_status,
    load_trials,
    plugin_env,
    run_cli,
    start_cli,
    tiny_csv,
    wait_group_gone,
    wait_until,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="the `ray` extra is not installed")
STORE = 80 * 2**20
ENV_KEYS = ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_TMPDIR", "PYTHONPATH", "AUTOML_PLUGINS",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


@pytest.fixture(scope="module")
def cluster():
    """A head node without CPUs; tests add (and remove) the worker nodes they need."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths are limited
    # Ray reads these when it is imported, so they are set first (it is imported only here)
    os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                       "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_TMPDIR": tmp,
                       "PYTHONPATH": str(ROOT),  # the nodes' workers import automl and the
                       "AUTOML_PLUGINS": "tests.fake_trainers"})  # fake trainers
    from ray.cluster_utils import Cluster

    c = None
    try:
        c = Cluster(initialize_head=True, shutdown_at_exit=False,
                    head_node_args={"num_cpus": 0, "object_store_memory": STORE})
        yield c
    finally:
        if c is not None:
            c.shutdown()  # stops the processes of the nodes it started, nothing else
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(tmp, ignore_errors=True)


def _env() -> dict[str, str]:
    return plugin_env(RAY_AUTH_TOKEN=os.environ["RAY_AUTH_TOKEN"], RAY_TMPDIR=os.environ["RAY_TMPDIR"])


def _add_nodes(cluster, n: int, num_cpus: int = 1, **kwargs):
    nodes = [cluster.add_node(num_cpus=num_cpus, object_store_memory=STORE, **kwargs)
             for _ in range(n)]
    cluster.wait_for_nodes()
    return nodes


def _remove(cluster, nodes) -> None:
    for node in nodes:
        if node in cluster.worker_nodes:
            cluster.remove_node(node, allow_graceful=False)


def _add_sleepy_node(cluster, monkeypatch, sleep_s: float):
    """A worker node whose trials of the `sleepy` learner sleep ``sleep_s``: a node's
    workers inherit its raylet's environment (not the driver's)."""
    with monkeypatch.context() as m:
        m.setenv("AUTOML_TEST_SLEEP_S", str(sleep_s))
        return _add_nodes(cluster, 1)[0]


def test_search_across_two_nodes_survives_a_node_dying_mid_trial(cluster, tmp_path, monkeypatch):
    """Trials run on both nodes; the second node dies while running one: that trial fails
    naming the node and runs once more on the other; every trial finishes, none is lost."""
    # trials on the second node sleep 60 s: it is removed long before one could finish there
    nodes = [_add_sleepy_node(cluster, monkeypatch, 0.5), _add_sleepy_node(cluster, monkeypatch, 60)]
    try:
        data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
        url = f"sqlite:///{out}/study.db"
        env = _env()
        proc = start_cli("fit", data, "--target", "y", "--include", "sleepy", "--cv", "holdout",
                         "--n-trials", 8, "--executor", "ray", "--ray-address", cluster.address,
                         "--output", out, env=env, log_dir=tmp_path)
        victim = nodes[1].node_id

        def running_on_victim():
            trials = load_trials(url)
            done = {t.number for t in trials if t.state == TrialState.COMPLETE}
            hit = [t for t in trials if t.state == TrialState.RUNNING
                   and t.user_attrs.get("ray_node") == victim]
            return (hit[0].number, done) if hit and done else None

        lost, complete_before = wait_until(running_on_victim, 180, "a trial running on node 2",
                                           proc=proc, poll=0.1)
        cluster.remove_node(nodes[1], allow_graceful=False)
        assert proc.wait(timeout=240) == 0, (tmp_path / "run.err").read_text()
        trials = load_trials(url)
        by_number = {t.number: t for t in trials}
        assert all(t.state.is_finished() or t.state == TrialState.WAITING for t in trials)
        assert {t.user_attrs.get("ray_node") for t in trials} >= {nodes[0].node_id, victim}
        assert by_number[lost].state == TrialState.FAIL
        assert victim in by_number[lost].user_attrs["fail_reason"]
        retries = [t for t in trials if t.user_attrs.get("retry_of") == lost]
        assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
        assert retries[0].params == by_number[lost].params
        assert retries[0].user_attrs["ray_node"] == nodes[0].node_id
        assert all(by_number[n].state == TrialState.COMPLETE for n in complete_before)
        assert sum(t.state.is_finished() for t in trials) == 8
        assert load_model(out).task.value == "binary"
    finally:
        _remove(cluster, nodes)


@pytest.mark.slow  # ~35 s; the two-node test in the default suite runs trials on Ray
def test_fractional_gpus_share_logical_gpus(cluster, tmp_path):
    """Two nodes with one logical GPU each and --gpus-per-trial 0.5: four trials at a time,
    each on a GPU node, each seeing that node's GPU 0."""
    nodes = _add_nodes(cluster, 2, num_cpus=2, num_gpus=1)
    try:
        data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
        res = run_cli("fit", data, "--target", "y", "--include", "logistic", "--cv", "holdout",
                      "--n-trials", 6, "--executor", "ray", "--ray-address", cluster.address,
                      "--gpus-per-trial", 0.5, "--output", out, env=_env())
        assert res.returncode == 0, res.stderr
        # the cluster's size as the driver saw it last: 4 CPUs and 2 GPUs, so 4 trials at a time
        sizes = re.findall(r"up to (\d+) trial\(s\) at a time \((\d+) CPUs, (\d+) GPUs", res.stderr)
        assert sizes and sizes[-1] == ("4", "4", "2"), res.stderr
        trials = [t for t in load_trials(f"sqlite:///{out}/study.db") if t.state.is_finished()]
        assert len(trials) == 6
        assert {t.user_attrs["ray_node"] for t in trials} <= {n.node_id for n in nodes}
        assert {t.user_attrs["cuda_visible_devices"] for t in trials} == {"0"}
    finally:
        _remove(cluster, nodes)


@pytest.mark.slow  # ~30 s; tests/test_limits.py covers the caps of local trials
def test_trials_over_their_memory_cap_or_time_limit_on_ray_fail_and_the_search_goes_on(cluster,
                                                                                     tmp_path):
    nodes = _add_nodes(cluster, 1, num_cpus=2)
    try:
        data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
        res = run_cli("fit", data, "--target", "y", "--include", "hog,hang,logistic", "--cv",
                      "holdout", "--n-trials", 4, "--memory-limit", 300, "--trial-timeout", 4,
                      "--executor", "ray", "--ray-address", cluster.address, "--output", out,
                      env=_env())
        assert res.returncode == 0, res.stderr
        trials = [t for t in load_trials(f"sqlite:///{out}/study.db") if t.state.is_finished()]
        reasons = {t.params["learner"]: t.user_attrs.get("fail_reason", "") for t in trials}
        states = {t.params["learner"]: t.state for t in trials}
        assert states["hog"] == TrialState.FAIL and "memory" in reasons["hog"], reasons
        assert states["hang"] == TrialState.FAIL and "time limit" in reasons["hang"], reasons
        assert not any("retry_of" in t.user_attrs for t in trials)  # limits: no retry
        assert states["logistic"] == TrialState.COMPLETE
        assert load_model(out).description[0]["learner"] == "logistic"
    finally:
        _remove(cluster, nodes)


@pytest.mark.slow  # ~45 s; tests/test_resume.py kills a local driver in the default suite
def test_driver_killed_with_sigkill_loses_no_completed_trial(cluster, tmp_path, monkeypatch):
    """SIGKILL to the driver while trials run on the cluster: every trial it completed stays
    complete in the study, and --resume against the same cluster fails the orphaned ones
    with a reason and runs their configurations once more."""
    nodes = [_add_sleepy_node(cluster, monkeypatch, 3)]
    try:
        data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
        url = f"sqlite:///{out}/study.db"
        env = _env()
        args = ("fit", data, "--target", "y", "--include", "sleepy", "--cv", "holdout",
                "--executor", "ray", "--ray-address", cluster.address, "--output", out)
        proc = start_cli(*args, "--n-trials", 40, env=env, log_dir=tmp_path)

        def done_and_running():
            trials = load_trials(url)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            return done >= 2 and any(t.state == TrialState.RUNNING for t in trials)

        wait_until(done_and_running, 180, "two finished trials and one running", proc=proc,
                   poll=0.1)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its tasks are the cluster's
        proc.wait(timeout=30)
        before = load_trials(url)
        orphans = [t.number for t in before if t.state == TrialState.RUNNING]
        before_by_number = {t.number: t for t in before}
        done_before = {t.number for t in before if t.state == TrialState.COMPLETE}
        assert orphans and len(done_before) >= 2

        res = run_cli(*args, "--resume", "--n-trials", len(before) + len(orphans) + 1, env=env)
        assert res.returncode == 0, res.stderr
        after = {t.number: t for t in load_trials(url)}
        assert done_before <= {n for n, t in after.items() if t.state == TrialState.COMPLETE}
        for number in orphans:
            assert after[number].state == TrialState.FAIL
            assert after[number].user_attrs.get("fail_reason"), after[number].user_attrs
        # a configured orphan runs once more as it was; one killed before it was sampled
        # ran nothing (the sampler draws anew)
        retried = sorted(t.user_attrs["retry_of"] for t in after.values() if "retry_of" in t.user_attrs)
        assert retried == sorted(n for n in orphans if study_configured(before_by_number[n]))
    finally:
        _remove(cluster, nodes)


@pytest.mark.slow
def test_ctrl_c_stops_the_ray_work_then_resume_continues(tmp_path):
    """A local Ray instance (no --ray-address): Ctrl-C to the whole group exits 130 with one
    line, leaves no process behind, and --resume runs the interrupted configurations again."""
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths are limited
    try:
        _ctrl_c_then_resume(tmp_path, plugin_env(AUTOML_TEST_SLEEP_S="1.5", RAY_TMPDIR=ray_tmp))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ctrl_c_then_resume(tmp_path, env) -> None:
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    url = f"sqlite:///{out}/study.db"
    args = ("fit", data, "--target", "y", "--include", "sleepy", "--cv", "holdout",
            "--executor", "ray", "--output", out)
    proc = start_cli(*args, "--n-trials", 30, env=env, log_dir=tmp_path)
    wait_until(lambda: sum(t.state == TrialState.COMPLETE for t in load_trials(url)) >= 2, 240,
               "two finished trials", proc=proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert exit_status(proc, tmp_path, 120) == 130
    wait_group_gone(proc.pid, 30)
    err = (tmp_path / "run.err").read_text()
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "automl: interrupted; resume with: automl fit "), err
    before = load_trials(url)
    interrupted = [t.number for t in before if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state.is_finished() or t.state == TrialState.WAITING for t in before)
    res = run_cli(*args, "--resume", "--n-trials", len(before) + len(interrupted) + 1, env=env)
    assert res.returncode == 0, res.stderr
    after = load_trials(url)
    # a configured trial runs again as it was; one stopped while it was being sampled ran
    # nothing: put back whole if it was queued (requeue_of), else dropped (study.retry_once)
    configured = [t.number for t in before if t.user_attrs.get("interrupted") and study_configured(t)]
    assert configured and sorted(t.user_attrs["retry_of"] for t in after
                                 if "retry_of" in t.user_attrs) == sorted(configured)
    done_before = {t.number for t in before if t.state == TrialState.COMPLETE}
    assert done_before <= {t.number for t in after if t.state == TrialState.COMPLETE}
