"""What a trained model's synthetic captions get wrong: BLEU-4, colour words said that are (not) in
the image, and a few captions beside their references.

    python docs/main_job/caption_errors.py runs/tiny_multitask_long/final data_out/synthetic128_5k
    # ~10 s on 100 val images; README "The main job, measured" quotes it
"""
import argparse
import json
import re
from pathlib import Path

from PIL import Image

from pix2seq_fast.data.synthetic import COLOR_NAMES
from pix2seq_fast.eval.captions import corpus_bleu
from pix2seq_fast.model.pix2seq import Pix2Seq


def load_split(data_dir: Path, split: str, num_images: int):
    """First ``num_images`` images by id: ``(images, {id: [captions]}, {id: {colour names}})``."""
    captions = json.loads((data_dir / "annotations" / f"captions_{split}.json").read_text())
    instances = json.loads((data_dir / "annotations" / f"instances_{split}.json").read_text())
    images = sorted(captions["images"], key=lambda im: im["id"])[:num_images]
    references = {im["id"]: [] for im in images}
    for ann in captions["annotations"]:
        if ann["image_id"] in references:
            references[ann["image_id"]].append(ann["caption"])
    colours = {im["id"]: set() for im in images}
    for ann in instances["annotations"]:
        if ann["image_id"] in colours:
            colours[ann["image_id"]].add(ann["color"])
    return images, references, colours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--show", type=int, default=8)
    args = parser.parse_args()
    model = Pix2Seq.from_pretrained(args.model_dir).eval()
    images, references, colours = load_split(args.data_dir, args.split, args.images)
    pictures = [Image.open(args.data_dir / "images" / args.split / im["file_name"]).convert("RGB") for im in images]
    said = [r.text for r in model.predict(pictures, task="caption", greedy=True, max_length=64)]
    refs = [references[im["id"]] for im in images]
    print(f"BLEU-1..4 {' '.join(f'{b:.3f}' for b in corpus_bleu(said, refs))} on {len(images)} {args.split} images")
    right = wrong = unsaid = 0
    for im, text in zip(images, said):
        named = {w for w in re.findall(r"[a-z]+", text) if w in COLOR_NAMES}
        right += len(named & colours[im["id"]])
        wrong += len(named - colours[im["id"]])
        unsaid += len(colours[im["id"]] - named)
    print(f"colour words: {right} in the image, {wrong} not in it; {unsaid} colours of the image not named "
          "(most references name no colour)")
    for text, ref in list(zip(said, refs))[:args.show]:
        print(f"  said {text!r}\n    references {ref}")


if __name__ == "__main__":
    main()
