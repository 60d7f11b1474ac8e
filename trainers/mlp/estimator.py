"""The fitted MLP behind a scikit-learn interface, saved without torch objects."""

from __future__ import annotations

from typing import Any

import numpy as np

from automl.exceptions import require
from automl.isolation import torch_threads
from trainers.mlp.network import build_network, forward
from trainers.mlp.preprocessing import split_inputs
from trainers.torch_estimator import TorchEstimator

EVAL_BATCH = 8192


class MLPEstimator(TorchEstimator):
    """It takes the preprocessed matrix (numeric block, then categorical codes); the trainer
    returns it inside a ``Pipeline`` after its preprocessor, so the pipeline takes the raw
    cleaned frame. State: see :class:`~trainers.torch_estimator.TorchEstimator`."""

    trained_by = "trainers.mlp.trainer.MLPTrainer.fit (or `automl fit ... --include mlp`)"
    model_name = "MLP"

    def build_network(self) -> Any:
        return build_network(self.arch_)

    def logits(self, X: Any) -> np.ndarray:
        torch = require("torch", "deep")
        x_num, x_cat = split_inputs(X, int(self.arch_["n_num"]), list(self.arch_["cardinalities"]))
        chunks = []
        with torch_threads(self.predict_threads), torch.inference_mode():
            net = self.network()
            for s in range(0, len(x_num), EVAL_BATCH):
                out = forward(net, torch.from_numpy(x_num[s:s + EVAL_BATCH]),
                              torch.from_numpy(x_cat[s:s + EVAL_BATCH]))
                chunks.append(out.float().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, int(self.arch_["n_out"])))
