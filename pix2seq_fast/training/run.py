"""A whole training run, as ``train/main.py`` starts it (alone or under ``torchrun``):

data set (generated if missing) -> tokenizer -> model -> resumable step stream -> ``Trainer.fit``
with evaluation every ``eval_every`` steps -> final evaluation on the val split, a PNG of
predictions per task, ``save_pretrained(out_dir/final)`` and the table of metrics and wall time.

Written under ``out_dir``: ``config.json``, ``tokenizer.model``, ``checkpoints/step_*.pt``,
``metrics.jsonl`` (training records and ``{"step", "eval": {...}}`` records), ``vis/*.png``,
``predictions_<task>.png``, ``learning_curves.png`` (loss and metrics against step),
``final/`` (a ``Pix2Seq.from_pretrained`` directory) and ``final_metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from pix2seq_fast.training.checkpoint import list_checkpoints
from pix2seq_fast.training.config import TrainConfig, load_config
from pix2seq_fast.training.curves import learning_curves
from pix2seq_fast.training.distributed import DistInfo, barrier, cleanup, init_distributed


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _prepare_out_dir(cfg: TrainConfig, resume: bool, dist: DistInfo) -> Path:
    out = Path(cfg.out_dir)
    if not resume and list_checkpoints(out / "checkpoints"):  # every rank raises, none waits
        raise ValueError(f"out_dir {out} already holds checkpoints: pass --resume to continue that run "
                         "or choose another --out")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            (out / "metrics.jsonl").unlink(missing_ok=True)
            _write_config(out, cfg)
    barrier(dist)
    return out


def _write_config(out: Path, cfg: TrainConfig) -> None:
    """``config.json``; on ``--resume`` only once the checkpoint was accepted, so that a rejected
    resume leaves the run folder as it was."""
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(cfg.to_dict(), indent=1))
    tmp.replace(out / "config.json")


def _resume(trainer, out: Path, cfg: TrainConfig, dist: DistInfo, say) -> int | None:
    """Load the newest readable checkpoint (or raise); the step resumed from, None for a run that was
    stopped before its first checkpoint (it starts again from step 0)."""
    if trainer.resume():
        if dist.is_main:
            _trim_metrics(out / "metrics.jsonl", trainer.step)
            _write_config(out, cfg)
        say(f"[train] resumed from step {trainer.step}")
        return trainer.step
    found = list_checkpoints(out / "checkpoints")
    if found:
        raise ValueError(f"--resume: none of the {len(found)} checkpoint(s) in {out / 'checkpoints'} is readable "
                         f"({', '.join(p.name for p in found)}); refusing to train again from step 0 into this "
                         "run folder: remove them or choose another --out")
    if dist.is_main:
        _trim_metrics(out / "metrics.jsonl", 0)
        _write_config(out, cfg)
    say("[train] --resume: no checkpoint yet, starting from step 0")
    return None


def _trim_metrics(path: Path, step: int) -> None:
    """On resume: drop the records of steps after the checkpoint (they are trained again) and a
    line cut short by a killed process."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept))


def run(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train, evaluate and export. Returns (on every rank) ``{"summary", "metrics", "wall_s",
    "train_s", "final_dir", "resumed_from", "step", "model"}`` (metrics only on rank 0; no
    evaluation when ``stop_at`` ended the run early)."""
    from pix2seq_fast.training import data, evaluation, model_setup  # noqa: PLC0415
    from pix2seq_fast.training.loop import Trainer  # noqa: PLC0415

    wall0 = time.perf_counter()
    dist = init_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        out = _prepare_out_dir(cfg, resume, dist)
        say = print if dist.is_main else (lambda *a, **k: None)
        say(f"[train] world size {dist.world_size}, device {dist.device}, torch threads "
            f"{torch.get_num_threads()}, out_dir {out}")
        data.ensure_dataset(cfg, dist)
        tokenizer = data.load_or_train_tokenizer(cfg, dist, fallback=model_setup.init_tokenizer(cfg))
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = model_setup.build_model(cfg, tokenizer)
        canvas = model.config.image_size
        for task in cfg.tasks:  # a bad eval option fails now, not after training
            evaluation.predictor_options(cfg, task)
        datasets = data.build_train_datasets(cfg, model.config.vocab, canvas, tokenizer)
        stream = data.build_stream(cfg, datasets, dist)
        say(f"[train] model {cfg.preset}: {model.num_parameters() / 1e6:.2f}M parameters, canvas {canvas}, "
            f"vocab {model.config.vocab_size}; tasks "
            + ", ".join(f"{t} ({len(ds)} examples, L={cfg.codec_config(t).seq_len}, w={cfg.task_weights[t]})"
                        for t, ds in datasets.items())
            + f"; {cfg.mixing} mixing, batch "
            + (str({t: cfg.batch_size_of(t) for t in cfg.tasks}) if cfg.mixing == "batch" else str(cfg.batch_size))
            + f" x {cfg.repeat_augment} augmentations, {cfg.steps} steps")
        trainer = Trainer(cfg, model, dist)
        resumed_from = _resume(trainer, out, cfg, dist, say) if resume else None
        setup_s = time.perf_counter() - wall0

        def evaluate_now(step: int) -> None:
            if dist.is_main:
                result = evaluation.evaluate(model, cfg)
                evaluation.draw_predictions(model, cfg, out / "vis" / f"step_{step:07d}")
                _append_jsonl(out / "metrics.jsonl", {"step": step, "eval": result["summary"],
                                                      "eval_s": result["eval_s"]})
                say(f"[eval] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["summary"].items())
                    + f" ({result['eval_s']:.0f} s)")
            barrier(dist)

        train0 = time.perf_counter()
        trainer.fit(stream.batches(trainer.step), evaluate_now)
        train_s = time.perf_counter() - train0

        result = {"summary": {}, "metrics": {}, "final_dir": str(out / "final"), "resumed_from": resumed_from,
                  "train_s": round(train_s, 1), "step": trainer.step, "model": model}
        if trainer.step < cfg.steps:
            say(f"[train] stopped at step {trainer.step} of {cfg.steps} (stop_at); continue with --resume")
            return result
        if dist.is_main:
            eval0 = time.perf_counter()
            final = evaluation.evaluate(model, cfg, progress=progress)
            pictures = evaluation.draw_predictions(model, cfg, out / "predictions")
            model.save_pretrained(out / "final")
            eval_s = time.perf_counter() - eval0
            _append_jsonl(out / "metrics.jsonl", {"step": trainer.step, "eval": final["summary"],
                                                  "eval_s": final["eval_s"], "final": True})
            pictures.append(learning_curves(out / "metrics.jsonl", out / "learning_curves.png"))
            wall_s = time.perf_counter() - wall0
            result.update(summary=final["summary"], metrics=final["metrics"], wall_s=round(wall_s, 1),
                          setup_s=round(setup_s, 1), eval_s=round(eval_s, 1))
            (out / "final_metrics.json").write_text(json.dumps(
                {k: v for k, v in result.items() if k != "model"} | {"world_size": dist.world_size}, indent=1))
            say(f"[train] setup {setup_s:.0f} s (data, tokenizer, model), training {train_s:.0f} s, "
                f"final evaluation + pictures {eval_s:.0f} s")
            say("[train] pictures: " + ", ".join(str(p) for p in pictures))
            say(f"[train] model: {out / 'final'}  (pix2seq-fast predict IMAGE --checkpoint {out / 'final'})")
            say(f"[train] val split {cfg.val_split!r}, {cfg.eval_images or 'all'} images:")
            say(evaluation.format_table(final["summary"], wall_s))
        barrier(dist)
        return result
    finally:
        cleanup(dist)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train/main.py", description="Train Pix2Seq on one task or all four (alone or under torchrun).")
    parser.add_argument("--config", default="tiny_multitask",
                        help="a name in train/configs/, or a .py (defining CONFIG) / .json config file")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config fields (Python literal values; a.b=v sets a dict entry); repeatable")
    parser.add_argument("--out", default=None, help="output directory (default: the config's out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar for the final evaluation")
    return parser


def main(argv=None, config_dir=None) -> int:
    from pix2seq_fast.cli import one_line  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    try:
        try:
            cfg = load_config(args.config, config_dir)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - a config file is user input: a .py may raise anything
            raise ValueError(f"--config {args.config}: cannot be loaded ({one_line(e)})") from None
        overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
        if overrides:
            cfg = cfg.override(overrides)
        run(cfg, resume=args.resume, progress=not args.quiet)
    except (ValueError, OSError) as e:  # every bad file or option: one line, no traceback
        print(f"train/main.py: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0
