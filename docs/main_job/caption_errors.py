"""What a trained model's synthetic captions get wrong: BLEU-4, colour words said that are (not) in
the image, and a few captions beside their references.

    python docs/main_job/caption_errors.py runs/tiny_multitask_long/final data_out/synthetic128_5k
    # ~10 s on 100 val images; README "The main job, measured" quotes it
"""
import argparse
import re
from pathlib import Path

from pix2seq_fast.data.coco import CocoCaptions
from pix2seq_fast.data.synthetic import COLOR_NAMES
from pix2seq_fast.eval.captions import corpus_bleu
from pix2seq_fast.model.pix2seq import Pix2Seq
from pix2seq_fast.predictor.coco_run import annotation_file, load_split


def image_colours(data_dir: Path, split: str) -> dict[int, set[str]]:
    """``{image id: the colour names of its objects}`` (the synthetic set stores each one's ``color``)."""
    colours = {}
    for ann in load_split(annotation_file(data_dir, "detect", split), "detect")["annotations"]:
        colours.setdefault(ann["image_id"], set()).add(ann["color"])
    return colours


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--show", type=int, default=8)
    args = parser.parse_args()
    model = Pix2Seq.from_pretrained(args.model_dir).eval()
    captions = CocoCaptions(annotation_file(args.data_dir, "caption", args.split),
                            args.data_dir / "images" / args.split)
    ids = captions.image_ids[:args.images]
    said = [r.text for r in model.predict([captions.load_image(i) for i in ids], task="caption", greedy=True,
                                          max_length=64)]
    refs = [captions.captions(i) for i in ids]
    print(f"BLEU-1..4 {' '.join(f'{b:.3f}' for b in corpus_bleu(said, refs))} on {len(ids)} {args.split} images")
    colours = image_colours(args.data_dir, args.split)
    right = wrong = unsaid = 0
    for i, text in zip(ids, said):
        named, truth = {w for w in re.findall(r"[a-z]+", text) if w in COLOR_NAMES}, colours.get(i, set())
        right += len(named & truth)
        wrong += len(named - truth)
        unsaid += len(truth - named)
    print(f"colour words: {right} in the image, {wrong} not in it; {unsaid} colours of the image not named "
          "(most references name no colour)")
    for text, ref in list(zip(said, refs))[:args.show]:
        print(f"  said {text!r}\n    references {ref}")


if __name__ == "__main__":
    main()
