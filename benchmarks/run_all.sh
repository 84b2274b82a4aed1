#!/usr/bin/env bash
# Every paper experiment of docs/results.md, in order; each step skips what is already done, so rerun after a kill.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../.venv/bin/python}
bash train_models.sh
$PY table6_params.py
$PY table1_2.py
$PY table3_4.py
$PY table5.py
$PY train_step.py
