"""Persons' share of segmentation's polygon targets in the synthetic set, with and without the long
recipe's per-instance cap (``max_instance_weight``), counted over generated scenes.

    python docs/main_job/segmentation_targets.py   # ~5 s; README "The main job, measured" quotes it
"""
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from pix2seq_fast.data.synthetic import PERSON_ID, generate_image
from pix2seq_fast.tasks.segmentation import encode_segmentation
from pix2seq_fast.vocab import Vocab

CONFIGS = Path(__file__).resolve().parents[2] / "train" / "configs"


def long_recipe():
    spec = importlib.util.spec_from_file_location("tiny_multitask_long", CONFIGS / "tiny_multitask_long.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG


def main(num_scenes: int = 500):
    recipe = long_recipe()
    vocab = Vocab(**recipe.model_overrides["vocab"])
    capped = recipe.codec_config("segment")
    for name, cfg in (("uncapped", dataclasses.replace(capped, max_instance_weight=None)), ("capped", capped)):
        weight = {True: 0.0, False: 0.0}
        count = {True: 0, False: 0}
        for i in range(num_scenes):
            image, annotations, _ = generate_image(np.random.default_rng([3, i]), 128)
            size = np.array(image.shape[:2], np.float32)
            for ann in (a for a in annotations if not a["iscrowd"]):
                polygons = [np.array(p, np.float32).reshape(-1, 2)[:, ::-1] / size for p in ann["segmentation"]]
                seq = encode_segmentation([0.1, 0.1, 0.5, 0.5], ann["category_id"], polygons,
                                          np.random.default_rng(0), vocab, cfg)
                person = ann["category_id"] == PERSON_ID
                weight[person] += float(seq.weight[seq.target != vocab.pad].sum())  # polygon targets only
                count[person] += 1
        print(f"{name} (max_instance_weight={cfg.max_instance_weight}): persons are {count[True]} of "
              f"{count[True] + count[False]} instances and {weight[True] / (weight[True] + weight[False]):.0%} "
              "of the polygon targets' weight")


if __name__ == "__main__":
    main()
