"""The training loop: multi-task batch mixing, AdamW, warm-up + linear decay, clipping, accumulation,
bf16 autocast on GPU, DDP, atomic checkpoints with resume, JSON-lines metrics and tqdm progress."""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel

from pix2seq_fast.training.checkpoint import load_latest_checkpoint, save_checkpoint, set_rng_state
from pix2seq_fast.training.config import TrainConfig
from pix2seq_fast.training.distributed import DistInfo, all_reduce_mean, barrier
from pix2seq_fast.training.loss import weighted_token_loss
from pix2seq_fast.training.schedule import build_optimizer, build_scheduler

# A step's data: {task: {"image": [B,3,S,S], "input": [B,L], "target": [B,L], "weight": [B,L]}}
StepBatch = dict


def autocast_context(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MultiTaskLoss(torch.nn.Module):
    """``Σ_t w_t · loss_t`` over the tasks of a step's batch, in ONE forward (so DDP sees one forward
    per backward). Returns the total and each task's loss (detached)."""

    def __init__(self, model: torch.nn.Module, weights: dict):
        super().__init__()
        self.model, self.weights = model, dict(weights)

    def forward(self, batch: StepBatch) -> tuple[torch.Tensor, dict]:
        device = next(self.model.parameters()).device
        total, per_task = 0.0, {}
        for task, b in batch.items():
            logits = self.model(b["image"].to(device, non_blocking=True),
                                b["input"].to(device, non_blocking=True))
            loss = weighted_token_loss(logits, b["target"].to(device), b["weight"].to(device))
            per_task[task] = loss.detach()
            total = total + self.weights.get(task, 1.0) * loss
        return total, per_task


class Trainer:
    """Owns model, optimizer, scheduler and the step counter; ``fit`` runs to ``cfg.steps``."""

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, dist: DistInfo,
                 on_checkpoint: Callable[[int], None] | None = None):
        self.cfg, self.dist = cfg, dist
        self.out = Path(cfg.out_dir)
        self.model = model.to(dist.device)
        if cfg.freeze_encoder_steps >= cfg.steps:  # frozen for the whole run: skip its backward too
            for name, p in self.model.named_parameters():
                if name.startswith("encoder."):
                    p.requires_grad_(False)
        if cfg.cache_backbone_features:
            encoder = getattr(self.model, "encoder", None)
            if not getattr(encoder, "frozen", False):
                raise ValueError("cache_backbone_features needs a frozen CNN trunk: set model_overrides "
                                 "encoder='cnn' and freeze_backbone=True")
            from pix2seq_fast.training.feature_cache import TrunkFeatureCache  # noqa: PLC0415

            encoder.trunk_cache = TrunkFeatureCache(max_bytes=int(cfg.feature_cache_gb * 2**30))
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.betas, cfg.eps)
        self.scheduler = build_scheduler(self.optimizer, cfg.warmup_steps, cfg.steps, cfg.end_lr_factor,
                                         cfg.freeze_encoder_steps, cfg.encoder_lr_factor)
        self.step = 0
        self.on_checkpoint = on_checkpoint
        loss_module = MultiTaskLoss(self.model, cfg.task_weights)
        if dist.enabled:
            loss_module = DistributedDataParallel(
                loss_module, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
        self.train_model = torch.compile(loss_module) if cfg.compile else loss_module

    # ---- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        tokenizer = getattr(self.model, "tokenizer", None)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "config": self.cfg.to_dict(),
                "model_config": self.model.config.to_dict() if hasattr(self.model, "config") else None,
                "tokenizer": tokenizer.serialized if tokenizer is not None else None}

    def _trunk_cache_stats(self) -> dict:
        """This process's feature-cache counters so far (``{}`` without a cache): images whose trunk
        features were reused / computed, and the MiB held."""
        cache = getattr(getattr(self.model, "encoder", None), "trunk_cache", None)
        if cache is None:
            return {}
        return {"trunk_cache_hits": cache.hits, "trunk_cache_misses": cache.misses,
                "trunk_cache_mb": round(cache.bytes / 2**20, 1)}

    def save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.out / "checkpoints", self.step, self.state(), self.cfg.keep_last)
        barrier(self.dist)
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.step)
        return path

    def resume(self) -> bool:
        """Load the newest readable checkpoint in ``out_dir``; False when there is none."""
        state = load_latest_checkpoint(self.out / "checkpoints", map_location=self.dist.device)
        if state is None:
            return False
        mine = self.model.config.to_dict() if hasattr(self.model, "config") else None
        if state.get("model_config") != mine:
            raise ValueError(f"checkpoint {state['path']} was written for a different model config; "
                             f"resume with the run's own config or start a new out_dir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        set_rng_state(state["rng"])
        return True

    # ---- training ---------------------------------------------------------------------------
    def step_seed(self, step: int) -> int:
        """Seed of the torch RNG (dropout, drop-path) for ``step`` on this rank: a pure function of
        (seed, step, rank), so a resumed run draws what the uninterrupted one drew."""
        return (self.cfg.seed * 1_000_003 + step * 8191 + self.dist.rank) % (2**63)

    def train_step(self, micro_batches: list[StepBatch]) -> dict:
        """One optimizer step over ``accum_steps`` micro-batches. Returns on-device scalars
        (``loss``, ``loss_<task>``, ``grad_norm``), not reduced across ranks."""
        cfg, model = self.cfg, self.train_model
        model.train()
        torch.manual_seed(self.step_seed(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=self.dist.device)}
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else model.no_sync()
            with sync, autocast_context(cfg, self.dist.device):
                loss, per_task = model(batch)
                (loss / len(micro_batches)).backward()
            logs["loss"] = logs["loss"] + loss.detach().float() / len(micro_batches)
            for t, v in per_task.items():
                logs[f"loss_{t}"] = logs.get(f"loss_{t}", 0.0) + v.float() / len(micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        logs["grad_norm"] = grad_norm.detach().float()
        return logs

    def fit(self, batches: Iterator[StepBatch], evaluate: Callable[[int], dict] | None = None) -> list[dict]:
        """Train from ``self.step`` to ``cfg.steps`` (or to ``cfg.stop_at`` when set and earlier):
        checkpoint every ``ckpt_every`` steps and at the end, call ``evaluate(step)`` every ``eval_every`` steps (not at the end: the caller does).
        Logged records (the mean of each scalar over the last ``log_every`` steps, averaged across
        ranks) are returned and appended to ``out_dir/metrics.jsonl`` by rank 0. Host syncs happen
        only on logging steps."""
        from tqdm.auto import tqdm  # noqa: PLC0415

        cfg = self.cfg
        records = []
        metrics_file = self.out / "metrics.jsonl"
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", disable=not self.dist.is_main,
                   dynamic_ncols=True, mininterval=1.0)
        t0 = t_log = time.time()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        last = min(cfg.steps, cfg.stop_at) if cfg.stop_at else cfg.steps
        while self.step < last:
            micro = [next(batches) for _ in range(cfg.accum_steps)]
            logs = self.train_step(micro)
            for k, v in logs.items():
                sums[k] = sums[k] + v if k in sums else v
            count += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == last:
                keys = sorted(sums)
                reduced = all_reduce_mean(torch.stack([sums[k] for k in keys]) / count, self.dist).tolist()
                now = time.time()
                rec = {"step": self.step, "lr": self.scheduler.get_last_lr()[0],
                       "elapsed_s": round(now - t0, 2), "s_per_step": round((now - t_log) / count, 4),
                       **{k: round(v, 5) for k, v in zip(keys, reduced)}, **self._trunk_cache_stats()}
                sums, count, t_log = {}, 0, now
                records.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
                if self.dist.is_main:
                    with open(metrics_file, "a") as f:
                        f.write(json.dumps(rec) + "\n")
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < last:
                self.save()
            if evaluate is not None and cfg.eval_every and self.step % cfg.eval_every == 0 \
                    and self.step < cfg.steps:
                evaluate(self.step)
        bar.close()
        self.save()
        return records
