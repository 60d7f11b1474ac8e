"""Cost-frugal learner choice: which learner family the next sampled trial tries.

After every learner's default (and portfolio) configurations have run, the next trial's
learner is drawn with probability falling geometrically with the rank of the learner's
best score and with the square root of its typical fit time (FLAML's idea that cheap,
promising learners deserve more trials within a short budget). The learner is then fixed
by queueing ``{"learner": name}`` and the sampler (TPE by default) samples its parameters.
Learners that only ever failed are dropped after two failures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.fidelity import is_probe

RANK_DECAY = 0.5
COST_FLOOR_S = 0.05
EXPLORE = 0.05


def learner_weights(trials: Sequence[FrozenTrial], learners: Sequence[str],
                    greater_is_better: bool) -> dict[str, float]:
    """The probability of each learner being tried next (sums to 1)."""
    best: dict[str, float] = {}
    costs: dict[str, list[float]] = {name: [] for name in learners}
    fails: dict[str, int] = {name: 0 for name in learners}
    for t in trials:
        name = t.params.get("learner")
        if name not in costs:
            continue
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            v = t.value if greater_is_better else -t.value
            best[name] = max(best.get(name, -math.inf), v)
            if not is_probe(t):
                costs[name].append(float(t.user_attrs.get("fit_time", 1.0)))
        elif t.state == TrialState.PRUNED:
            costs[name].append(float(t.user_attrs.get("fit_time", 1.0)))
        elif t.state == TrialState.FAIL:
            fails[name] += 1
    ranked = sorted(best, key=lambda n: best[n], reverse=True)
    med = {n: max(COST_FLOOR_S, float(np.median(c))) for n, c in costs.items() if c}
    cheapest = min(med.values()) if med else 1.0
    raw: dict[str, float] = {}
    for name in learners:
        if name in best:
            raw[name] = RANK_DECAY ** ranked.index(name) / math.sqrt(med.get(name, 1.0) / cheapest)
        elif fails[name] >= 2:
            raw[name] = 0.0
        else:
            raw[name] = RANK_DECAY ** len(ranked)  # untried or pruned only: behind the tried ones
    total = sum(raw.values()) or 1.0
    live = [n for n in learners if raw[n] > 0] or list(learners)
    return {n: (1 - EXPLORE) * raw[n] / total + (EXPLORE / len(live) if n in live else 0.0)
            for n in learners}


class LearnerChooser:
    """An Optuna callback that queues the learner of the next trial when the queue is empty.

    (Not a scheduler in Optuna's or Ray's sense: it prunes nothing, it picks learners.)
    """

    def __init__(self, learners: Sequence[str], greater_is_better: bool, seed: int = 0) -> None:
        self.learners = list(learners)
        self.greater_is_better = greater_is_better
        self.rng = np.random.default_rng(seed)

    def __call__(self, study: optuna.Study, trial: FrozenTrial | None = None) -> None:
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials) or len(self.learners) < 2:
            return
        weights = learner_weights(trials, self.learners, self.greater_is_better)
        names = list(weights)
        p = np.asarray([weights[n] for n in names])
        choice = str(self.rng.choice(names, p=p / p.sum()))
        # "scheduler": the value stored studies already hold for such trials
        study.enqueue_trial({"learner": choice}, user_attrs={"queued": "scheduler"})
