"""Ctrl-C during a search is raised at a checkpoint, never inside a storage call."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from automl import interrupts


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs before kill() returns to Python


def test_a_ctrl_c_inside_the_block_waits_for_the_next_checkpoint():
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            _ctrl_c()
            done = sum(range(1000))  # "a storage call": runs to its end
            assert done == 499500
            with pytest.raises(KeyboardInterrupt):
                interrupts.checkpoint()
            interrupts.checkpoint()  # raised once: nothing pending now
            _ctrl_c()  # after the last checkpoint: raised as the block ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_stops_at_once():
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            _ctrl_c()
            _ctrl_c()
            reached = True
    assert not reached


def test_sigterm_is_deferred_only_where_it_was_an_interrupt():
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as the CLI's fit sets it
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(KeyboardInterrupt):
                interrupts.checkpoint()
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_handler_of_the_callers_own_is_left_alone():
    seen = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with interrupts.deferred():
            _ctrl_c()
            interrupts.checkpoint()  # not ours to raise
        assert seen == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)


def test_an_error_in_the_block_wins_over_a_pending_ctrl_c_and_clears_it():
    with pytest.raises(ValueError):
        with interrupts.deferred():
            _ctrl_c()
            raise ValueError("the search failed")
    interrupts.checkpoint()  # the recorded Ctrl-C went with the block


def test_off_the_main_thread_nothing_is_swapped():
    handlers = []

    def body():
        with interrupts.deferred():
            handlers.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert handlers == [signal.default_int_handler]


def test_sigusr1_prints_where_a_run_is_and_it_goes_on(tmp_path):
    from tests.runs import exit_status, start_cli, stderr_of, tiny_csv, wait_until

    data = tiny_csv(tmp_path / "d.csv")
    proc = start_cli("fit", data, "--target", "y", "--output", tmp_path / "out", "--time-budget",
                     60, "--include", "sleepy", log_dir=tmp_path)
    wait_until(lambda: (tmp_path / "out" / "study.db").exists(), 60, "the study", proc)
    os.kill(proc.pid, signal.SIGUSR1)
    # (faulthandler keeps the 100 innermost frames: an import can hide the CLI's own)
    wait_until(lambda: "(most recent call first)" in stderr_of(tmp_path), 30, "the stack dump", proc)
    assert proc.poll() is None  # still searching
    os.killpg(proc.pid, signal.SIGINT)
    assert exit_status(proc, tmp_path) == 130
    assert stderr_of(tmp_path).strip().splitlines()[-1].startswith("automl: interrupted")


def test_a_ctrl_c_while_a_refit_runs_stops_its_child(tmp_path):
    """The final model's refits run in ``run_isolated``: a Ctrl-C raised at its checkpoint
    ends the child too, not only when the parent exits."""
    import time

    import psutil

    from automl.isolation import run_isolated

    pid_file = tmp_path / "child.pid"

    def slow() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    timer = threading.Timer(1.0, _ctrl_c)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            run_isolated(slow, deadline=time.monotonic() + 60, mem_cap_mb=None)
    timer.join()
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
