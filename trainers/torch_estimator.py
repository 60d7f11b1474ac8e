"""The saved form shared by the torch learners (MLP, image, text fine-tuning).

A :class:`TorchEstimator` holds no torch object when saved: the network's weights are a
safetensors byte string and its architecture a plain dict, so skops saves and loads it
without pickled code; the network is rebuilt on the first prediction. Each learner's
estimator says how to build its network and how to compute logits. Nothing here imports
torch at module import; predicting needs torch and safetensors only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from automl.contracts import Task


def logits_to_scores(logits: np.ndarray, task: str, y_mean: float, y_scale: float) -> np.ndarray:
    """Probabilities (classification, softmax) or values in the target's units (regression)."""
    logits = np.asarray(logits, dtype=np.float64)
    if task == Task.REGRESSION.value:
        return logits[:, 0] * y_scale + y_mean
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def safetensors_bytes(state: Mapping[str, Any]) -> bytes:
    """A state dict as safetensors bytes (tensors moved to the CPU, contiguous)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


class TorchEstimator(BaseEstimator):
    """A fitted network behind a scikit-learn interface, saved without torch objects.

    State: ``arch_`` (plain dict), ``weights_`` (safetensors bytes), ``task_``,
    ``classes_`` (classification) and the regression target's ``y_mean_``/``y_scale_``;
    names starting with ``_`` (the rebuilt network, caches) are never saved. A subclass
    sets :attr:`trained_by` and :attr:`model_name` and implements :meth:`build_network`
    and :meth:`logits`.
    """

    predict_threads: ClassVar[int] = 1
    trained_by: ClassVar[str] = ""  # the fit error's text: what trains this estimator
    model_name: ClassVar[str] = "network"  # as in "this <model_name> is a regressor"

    def store(self, net: Any, arch: Mapping[str, Any], task: Task, n_classes: int,
              y_mean: float = 0.0, y_scale: float = 1.0,
              state: Mapping[str, Any] | None = None) -> TorchEstimator:
        """Keep ``net`` (moved to the CPU, as the network to predict with) and its saved form:
        ``state`` (default: the whole state dict) as safetensors bytes, ``arch`` and the
        target's description. Returns this estimator, fitted."""
        net = net.to("cpu").eval()
        self.arch_ = dict(arch)
        self.weights_ = safetensors_bytes(net.state_dict() if state is None else state)
        self.task_ = task.value
        if task.is_classification:
            self.classes_ = np.arange(n_classes)
        self.y_mean_, self.y_scale_ = float(y_mean), float(y_scale)
        self._net = net
        return self

    def build_network(self) -> Any:
        """A fresh torch module for ``arch_`` (its weights are loaded afterwards)."""
        raise NotImplementedError

    def load_weights(self, net: Any, state: dict[str, Any]) -> None:
        net.load_state_dict(state)

    def logits(self, X: Any) -> np.ndarray:
        """The network's outputs for the rows ``X``, as a float array ``(n, n_out)``."""
        raise NotImplementedError

    def fit(self, X: Any, y: Any = None) -> TorchEstimator:
        raise NotImplementedError(f"{type(self).__name__} is trained by {self.trained_by}, "
                                  "not refitted on its own.")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "weights_")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._net = None

    def network(self) -> Any:
        """The network in evaluation mode, rebuilt from the saved weights on first use."""
        if getattr(self, "_net", None) is None:
            from safetensors.torch import load

            net = self.build_network()
            self.load_weights(net, load(bytes(self.weights_)))
            self._net = net.eval()
        return self._net

    def _scores(self, X: Any) -> np.ndarray:
        return logits_to_scores(self.logits(X), self.task_, self.y_mean_, self.y_scale_)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task_ == Task.REGRESSION.value:
            raise AttributeError(f"predict_proba is for classifiers; this {self.model_name} is a regressor.")
        return self._scores(X)

    def predict(self, X: Any) -> np.ndarray:
        scores = self._scores(X)
        if self.task_ == Task.REGRESSION.value:
            return scores
        return self.classes_[np.argmax(scores, axis=1)]
