"""Search spaces, one module per learner family, as Optuna distributions.

Each module exposes ``space(info) -> dict[str, BaseDistribution]`` with bounds scaled
to the data, and ``default(info) -> dict`` with a cheap, strong first configuration
that the search queues before the sampler takes over. Parameter names are the
learner's own; the engine prefixes them with the learner name in the study.
"""

from __future__ import annotations
