"""The search configuration, validated in one place before anything runs."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field

from automl.exceptions import ConfigError

SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes", "qmc")
PRUNERS = ("median", "halving", "hyperband", "none")
SMALL_DATA_ROWS = 20_000
SMALL_DATA_CELLS = 500_000
TASKS = ("auto", "binary", "multiclass", "regression")
MAX_SEED = 2**32 - 1  # numpy's and the learners' seeds are 32-bit
EXECUTORS = ("local", "inprocess", "ray")


def _whole(value: object) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class SearchConfig:
    """Everything that shapes a search. ``validate`` names the bad option and the fix.

    Example:
        >>> SearchConfig(time_budget=60, sampler="tpe").validate().sampler
        'tpe'
    """

    task: str = "auto"
    metric: str = "auto"
    time_budget: float | None = None
    n_trials: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    n_jobs: int = 1
    include: list[str] | None = None
    exclude: list[str] | None = None
    cv: int | str = "auto"
    memory_limit_mb: float | None = None
    trial_timeout: float | None = None
    isolate: bool = True
    ensemble: bool = True
    # With k-fold validation, final members are their bagged fold models instead of refits
    # on all rows. Off by default: refits predicted better on 9 of 11 datasets
    # (benchmarks/results/bagging60.md).
    bagging: bool = False
    n_threads: int | None = None
    accelerator: str = "auto"  # auto, cpu, gpu
    gpus_per_trial: float = 0.0
    # where trials run: local (forked children with limits), inprocess, ray (see automl.executors)
    executor: str = "local"
    ray_address: str | None = None  # HOST:PORT or "auto"; None: start a local Ray instance
    cpus_per_trial: float | None = None  # Ray: CPUs a trial task reserves (1); also its threads
    # sentence encoder for text columns: auto (MiniLM when `automl[text]` is installed and
    # the budget allows), none (TF-IDF only), minilm, mpnet, or a local model folder
    text_backbone: str = "auto"
    extra: dict = field(default_factory=dict)

    def validate(self) -> SearchConfig:
        def bad(flag: str, value: object, fix: str) -> ConfigError:
            return ConfigError(f"{flag} got {value!r}; {fix}")

        if self.task not in TASKS:
            raise bad("--task", self.task, f"choose one of: {', '.join(TASKS)}.")
        if self.sampler not in SAMPLERS:
            raise bad("--sampler", self.sampler, f"choose one of: {', '.join(SAMPLERS)}.")
        if self.pruner not in PRUNERS:
            raise bad("--pruner", self.pruner, f"choose one of: {', '.join(PRUNERS)}.")

        def positive(flag: str, value: float | None, unit: str) -> None:
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                          and value > 0):
                raise bad(flag, value, f"give a positive number of {unit}.")

        positive("--time-budget", self.time_budget, "seconds")
        positive("--memory-limit", self.memory_limit_mb, "MB")
        positive("--trial-timeout", self.trial_timeout, "seconds")
        if self.n_trials is not None and (not _whole(self.n_trials) or self.n_trials < 1):
            raise bad("--n-trials", self.n_trials, "give at least 1 trial.")
        if self.time_budget is None and self.n_trials is None:
            self.time_budget = 60.0
        if not _whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise bad("--seed", self.seed, f"give a whole number from 0 to {MAX_SEED}.")
        if self.n_jobs == -1:
            self.n_jobs = os.cpu_count() or 1
        if not _whole(self.n_jobs) or self.n_jobs < 1:
            raise bad("--n-jobs", self.n_jobs, "give 1 or more worker processes (-1 for one per core).")
        if self.accelerator not in ("auto", "cpu", "gpu"):
            raise bad("--accelerator", self.accelerator, "choose one of: auto, cpu, gpu.")
        if not (isinstance(self.gpus_per_trial, (int, float)) and math.isfinite(self.gpus_per_trial)
                and self.gpus_per_trial >= 0):
            raise bad("--gpus-per-trial", self.gpus_per_trial, "give 0 or more GPUs per trial.")
        self._validate_executor()
        if self.text_backbone not in ("auto", "none", "minilm", "mpnet") and not os.path.isdir(
                self.text_backbone):
            raise bad("--text-backbone", self.text_backbone,
                      "choose auto, none, minilm or mpnet, or give a sentence-transformers folder.")
        if isinstance(self.cv, str) and self.cv not in ("auto", "holdout"):
            try:
                self.cv = int(self.cv)
            except ValueError:
                raise bad("--cv", self.cv, "give 'auto', 'holdout' or a number of folds >= 2.") from None
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, str)) or \
                (isinstance(self.cv, int) and self.cv < 2):
            raise bad("--cv", self.cv, "give 'auto', 'holdout' or a number of folds >= 2.")
        return self

    def _validate_executor(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor got {self.executor!r}; choose one of: {', '.join(EXECUTORS)}.")
        if self.cpus_per_trial is not None and not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ConfigError(f"--cpus-per-trial got {self.cpus_per_trial!r}; give a positive number.")
        if self.executor != "ray":
            if (self.executor == "inprocess" or not self.isolate) and self.n_jobs > 1:
                raise ConfigError(f"--n-jobs {self.n_jobs} needs trials in their own processes, but "
                                  "--no-isolation runs them here one at a time; drop one of them.")
            if self.ray_address:
                raise ConfigError(f"--ray-address {self.ray_address} needs --executor ray; add it, "
                                  "or drop --ray-address.")
            return
        if self.n_jobs > 1:
            raise ConfigError(f"--n-jobs {self.n_jobs} cannot be combined with --executor ray (Ray runs "
                              "as many trials at once as the cluster offers); drop --n-jobs.")
        if not self.isolate:
            raise ConfigError("--no-isolation cannot be combined with --executor ray (Ray trials run "
                              "in their own processes); drop one of them.")
        if self.accelerator == "gpu" and not self.gpus_per_trial:
            raise ConfigError("--accelerator gpu with --executor ray needs --gpus-per-trial (the "
                              "GPUs Ray gives each trial); add e.g. --gpus-per-trial 1.")

    def resolved_accelerator(self) -> str:
        """``cpu`` or ``gpu``: ``auto`` takes a GPU when one is visible and torch is installed.

        Only deep learners use it; checking does not import torch unless it is installed.
        """
        if self.accelerator == "cpu":
            return "cpu"
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            if self.accelerator == "gpu":
                raise ConfigError("--accelerator gpu needs torch; install it with "
                                  "`pip install 'automl[deep]'`.")
            return "cpu"
        if self.accelerator == "auto" and not os.environ.get("CUDA_VISIBLE_DEVICES", "x"):
            return "cpu"
        import torch

        if torch.cuda.is_available():
            return "gpu"
        if self.accelerator == "gpu":
            raise ConfigError("--accelerator gpu but no CUDA GPU is visible; use --accelerator auto or cpu.")
        return "cpu"

    def n_parallel(self) -> int:
        """How many trials may run at once (on Ray: as many as the cluster offers, so >1)."""
        return max(2, self.n_jobs) if self.executor == "ray" else self.n_jobs

    def threads_per_trial(self, n_rows: int | None = None, n_features: int | None = None) -> int:
        """Threads per trial: the cores shared by the workers; one for small data, where
        threading costs more than it gains (and spins badly on a busy machine). Small is
        under 20,000 rows and under 500,000 cells: a 3,750-row table of 784 columns is
        not (LightGBM's 10-class defaults took 40 s a fold on one thread)."""
        if self.n_threads:
            return int(self.n_threads)
        if self.cpus_per_trial:
            return max(1, int(self.cpus_per_trial))
        if n_rows is not None and n_rows < SMALL_DATA_ROWS and \
                n_rows * (n_features or 1) < SMALL_DATA_CELLS:
            return 1
        return max(1, (os.cpu_count() or 1) // self.n_jobs)
