"""Ctrl-C at random moments of real `automl fit --force` runs: does each exit 130 in time?

What CI's ``test_ctrl_c_during_force_restores_the_old_folder`` does once, repeated: copy a
fitted run folder, start ``automl fit --force`` on it with the tests' ``sleepy`` learner
(short trials, so the interrupt lands in every part of the search loop), send SIGINT to its
process group after a random delay, and wait. A run that has not exited gets its threads'
stacks printed (the CLI's SIGUSR1) before it is killed.

    .venv/bin/python benchmarks/interrupt_stress.py --runs 70 --busy 2

``--busy N`` runs N busy loops beside it (CI's load is what made the hang show: 1 run in
20 hung at 7904faf with 2 busy loops on 2 cores; 0 in 70 after automl/interrupts.py).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runs import plugin_env, tiny_csv  # noqa: E402

AUTOML = str(ROOT / ".venv" / "bin" / "automl")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--busy", type=int, default=2, help="busy loops beside the runs")
    ap.add_argument("--sleep", type=float, default=0.05, help="seconds per sleepy trial fold")
    ap.add_argument("--wait", type=float, default=25, help="seconds a run may take to exit")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="automl-interrupts-"))
    env = plugin_env(AUTOML_TEST_SLEEP_S=str(args.sleep))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        data = tiny_csv(work / "d.csv")
        model = work / "model"
        subprocess.run([AUTOML, "fit", str(data), "--target", "y", "--output", str(model),
                        "--time-budget", "10", "--include", "sleepy", "--quiet"], env=env,
                       cwd=ROOT, check=True)
        bad = 0
        for i in range(args.runs):
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            for old in work.glob("out.replaced-*"):
                shutil.rmtree(old, ignore_errors=True)
            shutil.copytree(model, out)
            with open(work / "run.err", "w") as err:
                proc = subprocess.Popen([AUTOML, "fit", str(data), "--target", "y", "--output",
                                         str(out), "--force", "--time-budget", "60", "--include",
                                         "sleepy"], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                        cwd=ROOT, start_new_session=True)
                delay = rng.uniform(3, 9)
                time.sleep(delay)
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    status: int | str = proc.wait(timeout=args.wait)
                except subprocess.TimeoutExpired:
                    status = "hung"
                    os.kill(proc.pid, signal.SIGUSR1)
                    time.sleep(2)
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if status != 130:
                bad += 1
                print(f"run {i}: Ctrl-C after {delay:.1f} s -> {status}; stderr ends:\n"
                      f"{(work / 'run.err').read_text()[-6000:]}", flush=True)
        print(f"{bad} of {args.runs} runs did not exit 130 within {args.wait:g} s "
              f"({args.busy} busy loops beside them)")
        return 1 if bad else 0
    finally:
        for p in busy:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
