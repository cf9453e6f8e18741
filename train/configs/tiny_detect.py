"""Detection only, with the ``tiny_multitask`` recipe (frozen pretrained EfficientNet-Lite0 trunk at
stride 16 with memoised features, 128 px canvas, compact 64-bin vocabulary, flips only, objects
largest first without noise objects or class corruption; the reasons are in ``tiny_multitask.py``).

    python train/main.py --config tiny_detect
"""
from pix2seq_fast.training.config import TrainConfig

FLIP_ONLY = {"scale_range": (1.0, 1.0), "flip_prob": 0.5, "color_jitter": 0.0}
COMPACT_VOCAB = {"class_offset": 50, "num_classes": 10, "coord_offset": 60, "bins": 64, "text_offset": 124,
                 "text_vocab_size": 0}

CONFIG = TrainConfig(
    preset="tiny-lite0", image_size=128,
    model_overrides={"vocab": COMPACT_VOCAB, "feature_stride": 16, "dropout": 0.0, "drop_path": 0.0},
    tasks=("detect",), task_weights={"detect": 1.0},
    data_dir="data_out/synthetic128", synthetic={"num_train": 2000, "num_val": 200, "image_size": 128},
    task_configs={"detect": {"max_objects": 10, "object_order": "area", "noise_boxes": False,
                             "corrupt_classes": False}}, augment={"detect": FLIP_ONLY},
    cache_backbone_features=True, num_workers=1, threads=1, batch_size=32, steps=1500, warmup_steps=50,
    lr=3e-3, end_lr_factor=0.01, weight_decay=0.05, grad_clip=1.0, out_dir="runs/tiny_detect",
    log_every=20, ckpt_every=250, keep_last=2, eval_every=0, eval_images=100, eval_batch_size=32,
    eval_options={"greedy": True}, vis_images=4,
)
