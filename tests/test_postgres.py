"""PostgreSQL as the study storage, against a real server this module starts and stops.

The server comes from the Debian package ``postgresql`` (``scripts/install-test-deps.sh``,
run by ``make test``). PostgreSQL refuses to run as root, so as root the cluster is created
and run as the ``postgres`` system user (``runuser``), in a temporary directory, on a free
loopback port. The tests skip, saying why, only where no server can be installed or started.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automl.persistence import load_model
from tests.runs import (
    check_dead_trials_rerun,
    check_no_repeats,
    load_trials,
    n_state,
    run_cli,
    start_cli,
    tiny_csv,
    wait_group_gone,
    wait_until,
)


def _bindir() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2 is missing: pip install 'automl[postgres]'")
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL is not installed (scripts/install-test-deps.sh installs the "
            "Debian package `postgresql`)"
        )
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without `runuser`: cannot start PostgreSQL as `postgres`")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        prefix = [runuser, "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="automl-pg-"))
    if as_root:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, sock, logfile = tmp / "data", tmp, tmp / "server.log"
    port = _free_port()

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=tmp
        )

    res = pg(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-instructions",
    )
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"initdb failed: {(res.stderr or res.stdout).strip()[-300:]}")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    res = pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        opts,
        "-l",
        str(logfile),
        "-w",
        "-t",
        "60",
        "start",
    )
    if res.returncode != 0:
        log = logfile.read_text()[-300:] if logfile.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {(res.stderr or res.stdout).strip()[-200:]} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def test_fit_with_workers_and_resume_on_postgres(postgres_url, tmp_path):
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    common = (
        "fit",
        data,
        "--target",
        "y",
        "--include",
        "logistic",
        "--storage",
        postgres_url,
        "--study-name",
        "pg-fit",
        "--output",
        out,
    )
    res = run_cli(*common, "--n-trials", 6, "--n-jobs", 2)
    assert res.returncode == 0, res.stderr
    first = load_trials(postgres_url, "pg-fit")
    assert 6 <= sum(t.state.is_finished() for t in first) <= 7
    # --n-jobs 2: one driver keeps two trial processes going at once
    assert len({t.user_attrs["worker"] for t in first}) >= 2
    spans = sorted((t.datetime_start, t.datetime_complete) for t in first if t.datetime_complete)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans
    res = run_cli(*common, "--n-trials", 10, "--resume")
    assert res.returncode == 0, res.stderr
    after = load_trials(postgres_url, "pg-fit")
    assert sum(t.state.is_finished() for t in after) >= 10
    for t in first:
        assert after[t.number].value == t.value and after[t.number].params == t.params
    assert all(t.state.is_finished() for t in after)
    check_no_repeats(after)
    assert load_model(out).description[0]["learner"] == "logistic"
    assert not (out / "study.db").exists()  # the study lives in PostgreSQL only


@pytest.mark.slow  # ~20 s; tests/test_resume.py kills and resumes on SQLite by default
def test_sigkill_then_resume_on_postgres(postgres_url, tmp_path):
    data, out = tiny_csv(tmp_path / "d.csv"), tmp_path / "out"
    common = (
        "fit",
        data,
        "--target",
        "y",
        "--include",
        "sleepy",
        "--storage",
        postgres_url,
        "--study-name",
        "pg-kill",
        "--output",
        out,
    )
    proc = start_cli(*common, "--time-budget", 60, log_dir=tmp_path)

    def ready():
        trials = load_trials(postgres_url, "pg-kill")
        return (
            n_state(trials, TrialState.COMPLETE) >= 2 and n_state(trials, TrialState.RUNNING) >= 1
        )

    wait_until(ready, 90, "2 completed trials and a running one", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_group_gone(proc.pid)
    before = load_trials(postgres_url, "pg-kill")
    running = [t.number for t in before if t.state == TrialState.RUNNING]
    assert running
    res = run_cli(*common, "--resume", "--n-trials", len(before) + len(running) + 1)
    assert res.returncode == 0, res.stderr
    after = load_trials(postgres_url, "pg-kill")
    assert all(t.state.is_finished() for t in after)
    for n in running:
        assert after[n].state == TrialState.FAIL and "died" in after[n].user_attrs["fail_reason"]
    check_no_repeats(after)
    check_dead_trials_rerun(running, after)
    assert load_model(out).description[0]["learner"] == "sleepy"
