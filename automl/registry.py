"""The learner registry: the engine finds trainers by name, imported lazily.

Adding a learner family is one new module in ``trainers/`` plus one line here, or a
call to :func:`register` from user code.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from automl.contracts import OPTIONAL_HOOKS, TABULAR_KINDS, Task, Trainer
from automl.exceptions import ConfigError

_BUILTIN: dict[str, str] = {
    "lightgbm": "trainers.lightgbm_trainer:LightGBMTrainer",
    "catboost": "trainers.catboost_trainer:CatBoostTrainer",
    "hist_gb": "trainers.sklearn_trainers:HistGBTrainer",
    "random_forest": "trainers.sklearn_trainers:RandomForestTrainer",
    "extra_trees": "trainers.sklearn_trainers:ExtraTreesTrainer",
    "logistic": "trainers.sklearn_trainers:LogisticTrainer",
    "ridge": "trainers.sklearn_trainers:RidgeTrainer",
    "elasticnet": "trainers.sklearn_trainers:ElasticNetTrainer",
    "knn": "trainers.sklearn_trainers:KNNTrainer",
    "mlp": "trainers.mlp.trainer:MLPTrainer",
    "image_probe": "trainers.image_trainers:ImageProbeTrainer",
    "image": "trainers.image_trainers:ImageTrainer",
    "text_finetune": "trainers.text_finetune:TextFinetuneTrainer",
}
# Tried in this order when no learner list is given. Opt-in: `text_finetune` (the `text`
# extra; fine-tuning a sentence encoder on the CPU takes minutes), `mlp` (the `deep` extra) and
# `catboost` (the `catboost` extra): with it among the defaults the 60 s benchmark scored
# lower (mean normalized 0.966 vs 0.985 on 16 datasets: benchmarks/results/b60-automl-catboost).
DEFAULT_LEARNERS = ("lightgbm", "hist_gb", "random_forest", "extra_trees", "logistic", "ridge",
                    "elasticnet", "knn")
DEFAULT_ALIAS = "default"  # in --include: the default learners
# A learner reads the column kinds of its `input_kinds` (automl.contracts.TABULAR_KINDS unless
# it says otherwise); one that reads none of the data's kinds is left out. One whose
# `auto_kinds` the data has joins the defaults (first): the image learners for image paths.
__all__ = ["TABULAR_KINDS", "available", "builtin", "get_trainer", "input_kinds", "register",
           "registered", "resolve_learners", "trainer_class"]
KIND_LEARNERS = ("image_probe", "image")
_CUSTOM: dict[str, type] = {}


def register(trainer_cls: type) -> type:
    """Register a custom trainer class (usable as a decorator).

    Example:
        >>> @register  # doctest: +SKIP
        ... class MyTrainer: name = "mine"; tasks = frozenset({Task.BINARY}); ...
    """
    if not isinstance(getattr(trainer_cls, "name", None), str):
        raise ConfigError(f"trainer {trainer_cls!r} needs a string class attribute `name`.")
    _CUSTOM[trainer_cls.name] = _with_hooks(trainer_cls)
    return trainer_cls


@contextlib.contextmanager
def registered(trainer_cls: type) -> Iterator[type]:
    """``trainer_cls`` registered inside the block only (whatever held its name before
    comes back after), e.g. while :func:`automl.testing.check_trainer` checks it."""
    name = trainer_cls.name
    before = _CUSTOM.get(name)
    register(trainer_cls)
    try:
        yield _CUSTOM[name]
    finally:
        if before is None:
            _CUSTOM.pop(name, None)
        else:
            _CUSTOM[name] = before


def _with_hooks(trainer_cls: type) -> type:
    """Give a trainer class that does not subclass :class:`Trainer` the optional hooks it
    lacks, with the protocol's defaults, so the engine reads every hook directly."""
    for hook in OPTIONAL_HOOKS:
        if not hasattr(trainer_cls, hook):
            setattr(trainer_cls, hook, getattr(Trainer, hook))
    return trainer_cls


def builtin() -> list[str]:
    """The learners that ship with automl."""
    return list(_BUILTIN)


def available() -> list[str]:
    return list(_BUILTIN) + [n for n in _CUSTOM if n not in _BUILTIN]


def trainer_class(name: str) -> type:
    """The class of the trainer called ``name`` (its module imported on first use), with
    every optional hook of :class:`~automl.contracts.Trainer`."""
    if name in _CUSTOM:
        return _with_hooks(_CUSTOM[name])
    if name not in _BUILTIN:
        raise ConfigError(f"unknown learner '{name}'; choose from: {', '.join(available())}.")
    module_name, cls_name = _BUILTIN[name].split(":")
    module: Any = importlib.import_module(module_name)
    return _with_hooks(getattr(module, cls_name))


def get_trainer(name: str) -> Trainer:
    """Return an instance of the trainer called ``name``."""
    return trainer_class(name)()


def input_kinds(name: str) -> frozenset[str]:
    """The column kinds the learner ``name`` reads."""
    return frozenset(trainer_class(name).input_kinds)


def resolve_learners(task: Task, include: list[str] | None = None,
                     exclude: list[str] | None = None, kinds: set[str] | None = None) -> list[str]:
    """The learners to search for ``task``: ``include`` (or the defaults) minus ``exclude``.

    ``default`` in ``include`` stands for the default learners, so opt-in ones can be added
    to them (``--include default,catboost``). With the data's column ``kinds`` given,
    learners that read none of them are left out, and the learners for image columns
    join the defaults.

    Example:
        >>> resolve_learners(Task.REGRESSION, ["default", "catboost"], ["knn"])[-2:]
        ['elasticnet', 'catboost']
    """
    include = [n for name in (include or []) for n in
               (DEFAULT_LEARNERS if name == DEFAULT_ALIAS else (name,))] or None
    for name in (include or []) + (exclude or []):
        if name not in available():
            raise ConfigError(f"unknown learner '{name}'; choose from: {', '.join(available())} "
                              f"(or '{DEFAULT_ALIAS}' for the default ones).")
    names = list(dict.fromkeys(include)) if include else list(DEFAULT_LEARNERS)
    if kinds is not None:
        if not include:
            names = [n for n in KIND_LEARNERS
                     if set(trainer_class(n).auto_kinds) & kinds] + names
        names = [n for n in names if input_kinds(n) & kinds]
    names = [n for n in names if n not in set(exclude or [])]
    out = [n for n in names if task in get_trainer(n).tasks]
    if not out:
        raise ConfigError(f"no learner left for a {task.value} task after --include/--exclude "
                          f"({names or 'none'}); include at least one of: "
                          f"{', '.join(n for n in DEFAULT_LEARNERS if task in get_trainer(n).tasks)}.")
    return out
