"""A tabular MLP trained with PyTorch Lightning, searched in the same study as the rest.

The parts, one a module: :mod:`.preprocessing` (the table to a numeric block and
categorical codes), :mod:`.network` (the torch module from a plain-dict architecture),
:mod:`.module` (the LightningModule: loss, optimizer, schedule), :mod:`.estimator` (the
fitted network, saved without torch objects) and :mod:`.trainer` (the learner the search
calls). Shared training practice is in :mod:`trainers.lightning_common` and
:mod:`trainers.lightning_callbacks`.

The network: numeric inputs standardised (missing values imputed with indicators,
datetimes expanded, texts as TF-IDF + SVD, high-cardinality categoricals target-encoded),
low-cardinality categoricals through learned embeddings (code 0 is reserved for a
missing or unseen level), then ``depth`` blocks of Linear -> BatchNorm/LayerNorm -> ReLU
-> Dropout and a linear head.

Training: AdamW (no decay on biases and norms), linear warmup then cosine decay per
step, gradient clipping, early stopping on the trial's own validation metric (the best
epoch's weights are kept and its number becomes the refit's epoch count), bf16 mixed
precision on a GPU and 32-bit on the CPU, seeded and deterministic on the CPU. A
non-finite loss fails the trial with that reason; the deadline stops training.
Class imbalance: class-weighted cross-entropy (none, balanced, or the effective number
of samples of Cui et al. 2019) and, on imbalanced data, a searched balanced sampler.

Only predicting needs torch; training needs lightning too. Neither is imported when this
package, :mod:`.preprocessing`, :mod:`.network`, :mod:`.estimator` or :mod:`.trainer` is
imported; :mod:`.module` imports lightning.
"""
