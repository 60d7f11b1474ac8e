#!/usr/bin/env bash
# The GPU paths on a CUDA machine, in one go (about 6 minutes on one H200):
#   1. tests/test_gpu.py (`pytest -m gpu`): the mlp and image learners train on the GPU,
#      the probe's frozen features match the CPU's, trials record `accelerator: gpu`, the
#      saved models predict; skipped on machines without a GPU, so CI never runs them;
#   2. benchmarks/image_benchmark.py on hymenoptera with `--accelerator gpu`;
#   3. benchmarks/gpu_throughput.py: mlp rows per second, CPU threads against the GPU.
#
# Usage, from the repository root: OUT=results-folder benchmarks/gpu_check.sh [IMAGES]
#   IMAGES: a folder holding hymenoptera's labels.csv (default ../shared/datasets/images/hymenoptera).
#   STEPS: which of the steps to run (default "pytest images throughput").
# Where the machine's Python lacks our packages (a GPU image without a package index),
# put their wheels in .whl/: when it cannot import optuna, they are installed into it first.
# The interpreter is $PYTHON (default python3); it must have torch with CUDA.
set -u
OUT=${OUT:?set OUT to a folder for the results}
IMAGES=${1:-../shared/datasets/images/hymenoptera}
PY=${PYTHON:-python3}
case $PY in */*) PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") ;; esac  # absolute, not resolved (a venv's link stays)
STEPS=" ${STEPS:-pytest images throughput} "
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c 'import optuna' 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade .whl/*.whl \
    > "$OUT/install.log" 2>&1 || { echo "installing .whl/ failed: see $OUT/install.log"; exit 1; }
fi
# the checkout importable and an `automl` command beside the interpreter (the tests run it)
BIN=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")
if ! (cd / && "$PY" -c 'import automl' 2>/dev/null); then
  "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' | {
    read -r site; echo "$PWD" > "$site/automl-checkout.pth"; }
fi
[ -x "$BIN/automl" ] || printf '#!/bin/sh\nexec "%s" -m automl "$@"\n' "$BIN/$(basename "$PY")" > "$BIN/automl"
chmod +x "$BIN/automl"

{
  date -u; nvidia-smi -L; nproc
  "$PY" -c 'import sys, torch, lightning, sklearn, pandas, numpy, optuna, lightgbm
print("python", sys.version.split()[0], "torch", torch.__version__, "lightning", lightning.__version__,
      "sklearn", sklearn.__version__, "pandas", pandas.__version__, "numpy", numpy.__version__,
      "optuna", optuna.__version__, "lightgbm", lightgbm.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "$name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$OUT/steps.txt"
}

step pytest 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs tests/test_gpu.py
if [ -d "$IMAGES" ]; then
  step images 170 "$PY" benchmarks/image_benchmark.py --data "$IMAGES" --probes lite0 --budget 90 \
    --fit-args "--accelerator gpu" --out "$OUT/images.md"
else
  echo "images: skipped ($IMAGES is absent)" | tee -a "$OUT/steps.txt"
fi
step throughput 150 "$PY" benchmarks/gpu_throughput.py --rows 20000 --epochs 3 \
  --batch-sizes 256,1024,4096 --threads "1,$(nproc)" --repeats 3 --out "$OUT/gpu_throughput.md"
cat "$OUT/steps.txt"
