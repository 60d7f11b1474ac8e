"""Temporary folders: a trial's are gone when it ends, even when it was killed at its
deadline; a run killed with SIGKILL leaves its folders, and the next run removes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from automl import scratch
from tests.runs import plugin_env, run_cli, start_cli, tiny_csv, wait_until


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(folder: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(folder, (then, then))


def _ours(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("automl-"))


def test_sweep_removes_only_old_folders_of_processes_that_are_gone(tmp_path):
    dead = _dead_pid()
    gone = tmp_path / f"automl-run-{dead}-abc"
    (gone / "kept-1").mkdir(parents=True)
    (gone / "kept-1" / "trial-0.kept.pkl").write_bytes(b"pickle")
    gone_trial = tmp_path / f"automl-trial-{dead}-def"
    gone_trial.mkdir()
    recent = tmp_path / f"automl-trial-{dead}-new"  # changed just now: left alone
    recent.mkdir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live_proc:
        try:
            live = tmp_path / f"automl-run-{live_proc.pid}-xyz"
            live.mkdir()
            other = tmp_path / f"automl-kept-{dead}-old"  # not a name this module makes
            other.mkdir()
            target = tmp_path / "elsewhere"
            target.mkdir()
            link = tmp_path / f"automl-run-{dead}-link"
            link.symlink_to(target, target_is_directory=True)
            for folder in (gone, gone_trial, live, other, target):
                _age(folder, 2 * scratch.STALE_AFTER_S)
            os.utime(link, (time.time() - 3600,) * 2, follow_symlinks=False)

            assert scratch.sweep_stale(str(tmp_path)) == 2

            assert _ours(tmp_path) == sorted([live.name, other.name, link.name, recent.name])
            assert target.is_dir()
        finally:
            live_proc.kill()


def test_a_trial_killed_at_its_deadline_leaves_no_temporary_files(tmp_path):
    tmp, log = tmp_path / "tmp", tmp_path / "litter.log"
    tmp.mkdir()
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    env = plugin_env(TMPDIR=str(tmp), AUTOML_TEST_TMP_LOG=str(log))
    res = run_cli("fit", data, "--target", "y", "--include", "logistic,litter", "--n-trials", 4,
                  "--trial-timeout", 2, "--output", out, env=env)
    assert res.returncode == 0, res.stderr
    left = log.read_text().split()
    assert left, "the litter trials never ran"
    for folder in left:  # each made in its trial's own folder, which went with the trial
        assert Path(folder).parent.name.startswith("automl-trial-"), folder
        assert Path(folder).parent.parent == tmp, folder
        assert not Path(folder).exists(), folder
    assert _ours(tmp) == []


def test_the_folders_of_a_run_killed_with_sigkill_go_with_the_next_run(tmp_path):
    tmp, log = tmp_path / "tmp", tmp_path / "litter.log"
    tmp.mkdir()
    data = tiny_csv(tmp_path / "d.csv")
    env = plugin_env(TMPDIR=str(tmp), AUTOML_TEST_TMP_LOG=str(log))
    proc = start_cli("fit", data, "--target", "y", "--include", "litter", "--n-trials", 1,
                     "--output", tmp_path / "killed", log_dir=tmp_path, env=env)
    try:
        wait_until(lambda: log.is_file() and log.read_text().strip(), timeout=60,
                   what="the trial's temporary folder", proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    left = _ours(tmp)
    assert any(n.startswith(f"automl-run-{proc.pid}-") for n in left), left
    assert any(n.startswith(f"automl-trial-{proc.pid}-") for n in left), left
    for name in left:
        _age(tmp / name, 2 * scratch.STALE_AFTER_S)

    res = run_cli("fit", data, "--target", "y", "--include", "logistic", "--n-trials", 2,
                  "--output", tmp_path / "next", env=env)
    assert res.returncode == 0, res.stderr
    assert _ours(tmp) == []
