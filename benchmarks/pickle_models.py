"""How long writing a trial's kept model takes, and how much memory it adds while it is
written: Python's pickle against automl's (:mod:`automl.pickling`, where LightGBM writes its
own model text), on the model that made a 60 s digits run fail: LightGBM's portfolio
configuration (learning rate 0.05) on the 10 classes of scikit-learn's digits, which runs
all 3,000 rounds (30,000 trees).

Each way runs in a fresh process: fit, then pickle to a file while a thread samples the
process's RSS every 2 ms; the figure is the peak above the RSS before writing.

    .venv/bin/python benchmarks/pickle_models.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent("""
    import json, os, pickle, sys, threading, time, warnings
    import numpy as np
    from sklearn.datasets import load_digits
    import lightgbm as lgb
    from automl import pickling
    from trainers.lightgbm_trainer import _reduce_booster
    warnings.filterwarnings("ignore")
    way, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    X, y = load_digits(return_X_y=True)
    model = lgb.LGBMClassifier(n_estimators=rounds, learning_rate=0.05, num_leaves=31,
                               subsample=0.8, subsample_freq=1, colsample_bytree=0.8,
                               reg_lambda=1.0, n_jobs=2, verbose=-1, random_state=0)
    model.fit(X[:1437].astype(np.float32), y[:1437])
    pickling.register_reducer(lgb.Booster, _reduce_booster)
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page
    peak, done = [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)
    before = rss()
    thread = threading.Thread(target=sample)
    thread.start()
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        if way == "pickle":
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            pickling.dump(model, fh)
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        back = pickle.load(fh)
    read = time.perf_counter() - t0
    same = bool(np.array_equal(back.predict_proba(X[1437:]), model.predict_proba(X[1437:])))
    print(json.dumps({"write_s": wall, "added_mb": (max(peak[0], rss()) - before) / 2**20,
                      "read_s": read, "file_mb": os.path.getsize(path) / 2**20,
                      "trees": model.booster_.num_trees(), "same_predictions": same}))
""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3000)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"pickle": [], "automl": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for way in runs:  # alternated, so drift on the machine hits both
                out = subprocess.run([sys.executable, "-c", CHILD, way, f"{tmp}/m.pkl", str(args.rounds)],
                                     capture_output=True, text=True, check=True)
                runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {way: {k: statistics.median(r[k] for r in rs) for k in ("write_s", "added_mb", "read_s", "file_mb")}
           for way, rs in runs.items()}
    print(f"{runs['pickle'][0]['trees']} trees; same predictions after reading: "
          f"{all(r['same_predictions'] for rs in runs.values() for r in rs)}")
    print("| way | write s | memory added while writing, MB | read s | file MB |")
    print("|---|---|---|---|---|")
    for way, m in med.items():
        print(f"| {way} | {m['write_s']:.2f} | {m['added_mb']:.0f} | {m['read_s']:.2f} | {m['file_mb']:.1f} |")
    p, a = med["pickle"], med["automl"]
    print(f"automl / pickle: write time {a['write_s'] / p['write_s']:.2f}, memory added "
          f"{a['added_mb'] / max(p['added_mb'], 1e-9):.2f}, read time {a['read_s'] / p['read_s']:.2f} "
          f"(medians of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
