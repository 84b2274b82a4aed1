#!/usr/bin/env bash
# Train the models the paper tables are evaluated on (see docs/training.md, docs/results.md):
#   runs/goal-unet  UNet alone (= stage 1 of the default model, the "UNet alone" baseline)   35 min
#   runs/goal       SAC (stage 2, initialised with the stage-1 UNet)                           65 min
#   runs/goal-mp    SAC + the UNet map as SAM's mask prompt, from runs/goal/best (beyond the paper) 31 min
#   runs/goal-dh    + a distance head on the UNet, UNet only, from runs/goal-mp/best             25 min
#   runs/goal-vp    + varied point counts, everything trained, from runs/goal-dh/best (the default) 25 min
#   runs/sam-ft     SAM-FT: mask decoder only, cached embeddings, expert-style GT prompts       35 min
# The two-stage <= 2 h recipe with the same ingredients (docs/training.md), only with WITH_FAST=1 (+116 min):
#   runs/fast-unet  UNet + distance head alone, best epoch by crop-val AJI                      45 min
#   runs/fast       SAC + mask prompt + varied points, from runs/fast-unet                      70 min
# Each command resumes its run if the folder already holds one (safe to rerun after a kill).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
SAC=${SAC:-.venv/bin/sac}
COMMON=(--data "$DATA/monuseg" --data "$DATA/dsb2018" --val-from-train 6 --val-seed 0 --threads 2 --no-progress)
resume() { [ -f "$1/last.ckpt" ] && echo --resume || true; }
[ -f runs/goal-unet/summary.json ] || $SAC train --variant unet "${COMMON[@]}" --out runs/goal-unet $(resume runs/goal-unet) \
  --crops-per-epoch 512 --batch-size 8 --max-time 35 --epochs 1000 --patience 10
[ -f runs/goal/summary.json ] || $SAC train --variant sac --init-from runs/goal-unet "${COMMON[@]}" --out runs/goal \
  $(resume runs/goal) --crop-pool --crops-per-epoch 384 --batch-size 4 --lora-layers 4 --points 64 --lr 4e-4 \
  --lr-prompt 5e-4 --val-crops 4 --val-max-images 30 --max-time 65 --epochs 100 --patience 10
[ -f runs/goal-mp/summary.json ] || $SAC train --variant sac --init-from runs/goal/best --mask-prompt "${COMMON[@]}" \
  --out runs/goal-mp $(resume runs/goal-mp) --crop-pool --crops-per-epoch 384 --batch-size 4 --lora-layers 4 \
  --points 64 --lr 4e-4 --lr-prompt 5e-4 --val-crops 4 --val-max-images 30 --max-time 31 --epochs 100 --patience 10
[ -f runs/goal-dh/summary.json ] || $SAC train --variant sac --init-from runs/goal-mp/best --mask-prompt \
  --distance-head --freeze-sam --monitor aji "${COMMON[@]}" --out runs/goal-dh $(resume runs/goal-dh) \
  --crops-per-epoch 512 --batch-size 8 --lora-layers 4 --points 64 --lr-prompt 2e-4 --val-crops 4 --val-max-images 30 \
  --max-time 25 --epochs 100 --patience 10
[ -f runs/goal-vp/summary.json ] || $SAC train --variant sac --init-from runs/goal-dh/best --mask-prompt \
  --distance-head --vary-points --monitor aji "${COMMON[@]}" --out runs/goal-vp $(resume runs/goal-vp) --crop-pool \
  --crops-per-epoch 384 --batch-size 4 --lora-layers 4 --points 64 --lr 2e-4 --lr-prompt 2e-4 --val-crops 4 \
  --val-max-images 30 --max-time 25 --epochs 100 --patience 10
[ -f runs/sam-ft/summary.json ] || $SAC train --variant sam-ft "${COMMON[@]}" --out runs/sam-ft $(resume runs/sam-ft) \
  --crop-pool --crops-per-epoch 384 --batch-size 4 --lr 4e-4 --val-crops 4 --val-max-images 30 --max-time 35 \
  --epochs 100 --patience 10
[ "${WITH_FAST:-0}" = 1 ] || exit 0
[ -f runs/fast-unet/summary.json ] || $SAC train --variant unet --distance-head --monitor aji "${COMMON[@]}" \
  --out runs/fast-unet $(resume runs/fast-unet) --crops-per-epoch 512 --batch-size 8 --max-time 45 --epochs 1000 \
  --patience 10
[ -f runs/fast/summary.json ] || $SAC train --variant sac --init-from runs/fast-unet --mask-prompt --distance-head \
  --vary-points --monitor aji "${COMMON[@]}" --out runs/fast $(resume runs/fast) --crop-pool --crops-per-epoch 384 \
  --batch-size 4 --lora-layers 4 --points 64 --lr 4e-4 --lr-prompt 2e-4 --val-crops 4 --val-max-images 30 \
  --max-time 70 --epochs 100 --patience 10
