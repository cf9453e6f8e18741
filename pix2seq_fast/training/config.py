"""The trainer's configuration: one dataclass, JSON round trip, ``key=value`` overrides.

Defaults follow the paper's v2 multi-task recipe (SPEC §6) where they are not about scale; the
configs in ``train/configs/`` set the scale (preset, image size, batch, steps).

Nested settings are plain dicts checked against the classes they configure:
``model_overrides`` -> ``ModelConfig`` fields (``vocab`` may be a partial dict merged into the
preset's vocabulary); ``task_configs[task]`` -> the task's codec config (``DetectionConfig`` ...);
``augment[task]`` -> ``AugmentConfig`` fields (``scale_range``, ``flip_prob``, ``color_jitter``,
``person_crop``, ``pad_value``); ``eval_options`` -> the predictor's options (``num_samples``,
``greedy``, ``top_p`` ...).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

TASK_NAMES = ("detect", "segment", "keypoints", "caption")


def _spec_task_weights() -> dict:
    """SPEC §2 batch-mixing weights, from their one home (imported late: no torch at import)."""
    from pix2seq_fast.data.mixing import DEFAULT_TASK_WEIGHTS  # noqa: PLC0415

    return dict(DEFAULT_TASK_WEIGHTS)


@dataclass
class TrainConfig:
    # model
    preset: str = "tiny"
    model_overrides: dict = field(default_factory=dict)   # ModelConfig fields; "vocab" may be a dict
    init_from: str = ""              # a save_pretrained() directory to start from (fine-tuning)
    image_size: int = 0              # square canvas; 0 = the preset's
    # tasks and data
    tasks: tuple = TASK_NAMES
    task_weights: dict = field(default_factory=_spec_task_weights)
    mixing: str = "batch"            # "batch": one batch of every task per step; "data": mixed batches
    data_dir: str = "data_out/synthetic"
    synthetic: dict = field(default_factory=dict)  # generate_dataset() kwargs used if data_dir is empty
    train_split: str = "train"
    val_split: str = "val"
    tokenizer: str = ""              # SentencePiece model file; "" trains one on the train captions
    text_vocab_size: int = 256       # size of that trained model (must fit the model's vocab)
    task_configs: dict = field(default_factory=dict)  # {task: {codec config field: value}}
    augment: dict = field(default_factory=dict)       # {task: {AugmentConfig field: value}}
    repeat_augment: int = 1          # v1: each image appears this many times per batch, augmented anew
    num_workers: int = 2
    # optimisation (SPEC §6: AdamW β 0.9/0.95, eps 1e-8, wd 0.05, warm-up then linear decay to 0.01·lr)
    batch_size: int = 16             # per task (batch mixing) or per step (data mixing), per process
    task_batch_sizes: dict = field(default_factory=dict)  # batch mixing: {task: batch size} overrides
    steps: int = 1000
    stop_at: int = 0                 # end this process after that step's checkpoint (resume later); 0 = off
    warmup_steps: int = 100
    lr: float = 1e-4
    end_lr_factor: float = 0.01
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0           # 0 disables clipping
    freeze_encoder_steps: int = 0    # the image encoder's lr stays 0 for these first steps
    encoder_lr_factor: float = 1.0   # the image encoder's lr is this times lr (after any freeze)
    cache_backbone_features: bool = False  # memoise a frozen CNN trunk's outputs per distinct image
    feature_cache_gb: float = 4.0    # that memo's size limit in GiB (past it, new inputs are not kept)
    trim_padding: bool = False       # batch mixing: cut each task's batch after its longest sequence's end
    accum_steps: int = 1
    compile: bool = False
    amp: str = "auto"                # "auto": bf16 autocast on GPU, fp32 on CPU; "bf16"; "none"
    device: str = "auto"             # "auto" (cuda if available), "cpu", "cuda"
    threads: int = 0                 # torch intra-op threads per process (0: torch's default)
    seed: int = 0
    # bookkeeping
    out_dir: str = "runs/tiny"
    log_every: int = 10
    ckpt_every: int = 200            # 0: only the final checkpoint
    keep_last: int = 3
    eval_every: int = 0              # 0: evaluate at the end only
    eval_images: int = 100           # val images used by the evaluation (0 = all)
    eval_batch_size: int = 16
    eval_options: dict = field(default_factory=dict)  # predictor options, e.g. {"num_samples": 4}
    vis_images: int = 4              # val images drawn per task into a PNG (0 = none)

    def __post_init__(self):
        self.tasks = (self.tasks,) if isinstance(self.tasks, str) else tuple(self.tasks)
        self.betas = tuple(self.betas)
        if isinstance(self.augment, dict):  # JSON turns scale_range tuples into lists
            self.augment = {t: {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}
                            if isinstance(sub, dict) else sub for t, sub in self.augment.items()}
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASK_NAMES} without repeats, got {self.tasks}")
        if self.mixing not in ("batch", "data"):
            raise ValueError(f"mixing must be 'batch' or 'data', got {self.mixing!r}")
        if not isinstance(self.trim_padding, bool):
            raise ValueError(f"trim_padding must be True or False, got {self.trim_padding!r}")
        if self.trim_padding and self.mixing != "batch":
            raise ValueError("trim_padding needs mixing='batch' (a mixed batch's tasks end at different lengths)")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("batch_size", "steps", "accum_steps", "repeat_augment", "log_every", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("image_size", "num_workers", "ckpt_every", "keep_last", "eval_every", "eval_images",
                     "vis_images", "warmup_steps", "text_vocab_size", "threads", "stop_at",
                     "freeze_encoder_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("warmup_steps", "freeze_encoder_steps"):
            if getattr(self, name) > self.steps:
                raise ValueError(f"{name} ({getattr(self, name)}) must be <= steps ({self.steps})")
        for name in ("lr", "eps"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "grad_clip", "end_lr_factor", "encoder_lr_factor", "feature_cache_gb"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        self._check_task_weights()
        self._check_nested()
        if not isinstance(self.task_batch_sizes, dict):
            raise ValueError(f"task_batch_sizes must be a dict {{task: batch size}}, got {self.task_batch_sizes!r}")
        for t, n in self.task_batch_sizes.items():
            if t not in self.tasks:
                raise ValueError(f"task_batch_sizes names {t!r}, which is not among the trained tasks {self.tasks}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"task_batch_sizes[{t!r}] must be an int >= 1, got {n!r}")
        if self.task_batch_sizes and self.mixing != "batch":
            raise ValueError("task_batch_sizes applies to batch mixing; with mixing='data' set batch_size")

    def batch_size_of(self, task: str) -> int:
        """Examples of ``task`` per step per process (batch mixing), before ``repeat_augment``."""
        return int(self.task_batch_sizes.get(task, self.batch_size))

    def _check_task_weights(self):
        if not isinstance(self.task_weights, dict):
            raise ValueError(f"task_weights must be a dict {{task: weight}}, got {self.task_weights!r}")
        missing = [t for t in self.tasks if t not in self.task_weights]
        if missing:
            raise ValueError(f"task_weights has no weight for task(s) {missing}")
        extra = [t for t in self.task_weights if t not in TASK_NAMES]
        if extra:
            raise ValueError(f"task_weights names unknown task(s) {extra}; tasks are {TASK_NAMES}")
        for t in self.tasks:
            w = self.task_weights[t]
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ValueError(f"task_weights[{t!r}] must be a finite number >= 0, got {w!r}")
        if sum(self.task_weights[t] for t in self.tasks) <= 0:
            raise ValueError("task_weights of the trained tasks must not all be 0")

    def _check_nested(self):
        from pix2seq_fast.data.augment import AugmentConfig  # noqa: PLC0415
        from pix2seq_fast.model.config import ModelConfig  # noqa: PLC0415
        from pix2seq_fast.tasks import TASK_CONFIGS  # noqa: PLC0415
        from pix2seq_fast.vocab import Vocab  # noqa: PLC0415

        _check_keys("model_overrides", self.model_overrides, ModelConfig)
        if isinstance(self.model_overrides.get("vocab"), dict):
            _check_keys("model_overrides['vocab']", self.model_overrides["vocab"], Vocab)
        for name, table in (("task_configs", TASK_CONFIGS),
                            ("augment", {t: AugmentConfig for t in TASK_NAMES})):
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict {{task: {{field: value}}}}, got {value!r}")
            for task, sub in value.items():
                if task not in table:
                    raise ValueError(f"{name} names unknown task {task!r}; tasks are {TASK_NAMES}")
                _check_keys(f"{name}[{task!r}]", sub, table[task])
                try:
                    table[task](**sub)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"{name}[{task!r}]: {e}") from None
        if "canvas" in {k for sub in self.augment.values() for k in sub}:
            raise ValueError("augment[...]['canvas'] is set by image_size, not per task")
        if not isinstance(self.eval_options, dict):
            raise ValueError(f"eval_options must be a dict of predictor options, got {self.eval_options!r}")
        if not isinstance(self.synthetic, dict):
            raise ValueError(f"synthetic must be a dict of generate_dataset() arguments, got {self.synthetic!r}")
        bad = set(self.synthetic) - {"num_train", "num_val", "image_size", "seed", "image_format"}
        if bad:
            raise ValueError(f"synthetic has unknown key(s) {sorted(bad)}; valid: num_train, num_val, "
                             "image_size, seed, image_format")

    # ---- conversions ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**d)

    def override(self, assignments: list[str]) -> "TrainConfig":
        """Apply ``key=value`` strings (values parsed as Python literals, else kept as strings);
        ``a.b.c=v`` sets key ``c`` of the dict ``a[b]`` (created when missing)."""
        d = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            head, *path = key.strip().split(".")
            if head not in d:
                raise ValueError(f"unknown config key {head!r} in override {item!r}; valid keys: {sorted(d)}")
            if not path:
                d[head] = value
                continue
            if not isinstance(d[head], dict):
                raise ValueError(f"config key {head!r} is not a dict; cannot set {key!r}")
            node = d[head] = _copy_dicts(d[head])
            for part in path[:-1]:
                child = node.get(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{key!r}: {part!r} holds {child!r}, not a dict")
                node[part] = child
                node = child
            node[path[-1]] = value
        return TrainConfig.from_dict(d)

    def codec_config(self, task: str):
        """The codec config of ``task`` with ``task_configs[task]`` applied."""
        from pix2seq_fast.tasks import TASK_CONFIGS  # noqa: PLC0415

        return TASK_CONFIGS[task](**self.task_configs.get(task, {}))


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _copy_dicts(d: dict) -> dict:
    return {k: _copy_dicts(v) if isinstance(v, dict) else v for k, v in d.items()}


def _check_keys(name: str, value, cls) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of {cls.__name__} fields, got {value!r}")
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - valid
    if unknown:
        raise ValueError(f"{name} has unknown key(s) {sorted(unknown)}; valid {cls.__name__} fields: "
                         f"{sorted(valid)}")


def load_config(name_or_path: str, config_dir: str | Path | None = None) -> TrainConfig:
    """A config by name (``train/configs/<name>.py`` defining ``CONFIG``), by ``.py`` path, or a JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"no config file {path}")
        return TrainConfig.from_dict(json.loads(path.read_text()))
    if path.suffix != ".py":
        if config_dir is None:
            raise ValueError(f"config {name_or_path!r}: give a .py/.json path or a config_dir")
        path = Path(config_dir) / f"{name_or_path}.py"
    if not path.is_file():
        available = sorted(p.stem for p in Path(config_dir).glob("*.py")) if config_dir else []
        raise FileNotFoundError(f"no config {name_or_path!r} at {path}; available: {available}")
    spec = importlib.util.spec_from_file_location(f"p2s_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not isinstance(getattr(module, "CONFIG", None), TrainConfig):
        raise ValueError(f"{path} must define CONFIG = TrainConfig(...)")
    return module.CONFIG
