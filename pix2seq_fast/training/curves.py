"""The learning-curve picture of a run (OpenCV, no plotting library): each task's training loss against
step (log scale) on the left, every evaluation's metrics against step on the right, read from the
run's ``metrics.jsonl``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from pix2seq_fast.visualize import PALETTE, save_png

PANEL_W, PANEL_H, MARGIN = 560, 380, 56


def read_metrics(path) -> tuple[list[dict], list[dict]]:
    """``metrics.jsonl`` -> (training records, evaluation records), each sorted by step."""
    train, evals = [], []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        (evals if "eval" in record else train).append(record)
    return sorted(train, key=lambda r: r["step"]), sorted(evals, key=lambda r: r["step"])


def _panel(title: str, series: dict[str, list[tuple[float, float]]], log_y: bool, y_range=None) -> np.ndarray:
    """One chart ``[PANEL_H, PANEL_W, 3]`` uint8 of named ``(x, y)`` series."""
    img = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    points = [(x, y) for s in series.values() for x, y in s if math.isfinite(y) and (y > 0 or not log_y)]
    cv2.putText(img, title, (MARGIN, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    if not points:
        cv2.putText(img, "no data", (PANEL_W // 2 - 40, PANEL_H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (120, 120, 120), 1, cv2.LINE_AA)
        return img
    f = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    x_lo, x_hi = 0.0, max(max(x for x, _ in points), 1.0)
    y_lo, y_hi = y_range if y_range else (min(f(y) for _, y in points), max(f(y) for _, y in points))
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    left, top, right, bottom = MARGIN, 40, PANEL_W - 16, PANEL_H - 40

    def px(x, y):
        return (int(left + (x - x_lo) / (x_hi - x_lo) * (right - left)),
                int(bottom - (f(y) - y_lo) / (y_hi - y_lo) * (bottom - top)))

    cv2.rectangle(img, (left, top), (right, bottom), (160, 160, 160), 1)
    for k in range(5):
        yv = y_lo + (y_hi - y_lo) * k / 4
        y = int(bottom - (bottom - top) * k / 4)
        cv2.line(img, (left, y), (right, y), (230, 230, 230), 1)
        label = f"{10 ** yv:.3g}" if log_y else f"{yv:.2f}"
        cv2.putText(img, label, (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
        xv = x_lo + (x_hi - x_lo) * k / 4
        x = int(left + (right - left) * k / 4)
        cv2.putText(img, f"{xv:.0f}", (x - 12, bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (90, 90, 90), 1,
                    cv2.LINE_AA)
    cv2.putText(img, "step", (right - 30, PANEL_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for i, (name, pts) in enumerate(series.items()):
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        pts = [(x, y) for x, y in pts if math.isfinite(y) and (y > 0 or not log_y)]
        coords = [px(x, y) for x, y in pts]
        for a, b in zip(coords, coords[1:]):
            cv2.line(img, a, b, color, 2, cv2.LINE_AA)
        for c in coords if len(coords) < 12 else coords[-1:]:
            cv2.circle(img, c, 3, color, -1, cv2.LINE_AA)
        y = top + 14 + 16 * i
        cv2.line(img, (right - 150, y - 4), (right - 130, y - 4), color, 2)
        cv2.putText(img, name, (right - 125, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def learning_curves(metrics_path, out_path) -> Path:
    """Write the two-panel PNG for ``metrics_path`` to ``out_path``; returns the path."""
    train, evals = read_metrics(metrics_path)
    tasks = sorted({k[len("loss_"):] for r in train for k in r if k.startswith("loss_")})
    losses = {t: [(r["step"], r[f"loss_{t}"]) for r in train if f"loss_{t}" in r] for t in tasks}
    names = sorted({k for r in evals for k in r["eval"] if k != "CIDEr"})
    scores = {n: [(r["step"], r["eval"][n]) for r in evals if n in r["eval"]] for n in names}
    picture = np.concatenate([_panel("training loss per task", losses, log_y=True),
                              _panel("evaluation (val)", scores, log_y=False, y_range=(0.0, 1.0))], axis=1)
    out_path = Path(out_path)
    save_png(out_path, picture)
    return out_path
