#!/usr/bin/env python
"""Train Pix2Seq: one task or all four, alone or under torchrun (DDP: gloo on CPU, nccl on GPU).

    python train/main.py --config tiny_multitask                  # the README's main job (2-core CPU)
    python train/main.py --config tiny_detect --set steps=300 --out runs/det
    python train/main.py --config tiny_multitask --out runs/tiny --resume
    torchrun --standalone --nproc_per_node=2 train/main.py --config tiny_multitask

Configs live in ``train/configs/<name>.py`` (each defines ``CONFIG = TrainConfig(...)``); see
``pix2seq_fast.training.run`` for what a run writes.
"""
import os
import sys
from pathlib import Path

# Before torch loads libgomp: its idle threads spin 300,000 times before they sleep, and on a small
# CPU that spinning takes the cores a data-loader worker needs. At 10,000 the long recipe's first 300
# steps (where the frozen trunk still runs on most inputs) took 144-148 s instead of 161-165 s on two
# cores, with the same losses; warm-cache steps were the same within noise. An explicit
# GOMP_SPINCOUNT in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from pix2seq_fast.training.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], config_dir=Path(__file__).resolve().parent / "configs"))
