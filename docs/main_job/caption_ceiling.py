"""BLEU-4 ceiling of the synthetic captions: a captioner that knows each scene exactly and always
writes caption template k, scored against that scene's references (a random 2-5 of the 5 templates).

    python docs/main_job/caption_ceiling.py   # ~10 s; README "The main job, measured" quotes it
"""
import numpy as np

import pix2seq_fast.data.synthetic as synthetic
from pix2seq_fast.eval.captions import corpus_bleu


class _AllTemplates:
    """Stands in for the generator's rng inside ``_captions``: keep every template, in order."""

    def permutation(self, n):
        return np.arange(n)

    def integers(self, low, high):
        return 5


def main(num_scenes: int = 400):
    scenes = []  # (all 5 templates, the references the data set keeps)
    draw_references = synthetic._captions

    def recording(scene, boxes, rng):
        references = draw_references(scene, boxes, rng)
        scenes.append((draw_references(scene, boxes, _AllTemplates()), references))
        return references

    synthetic._captions = recording
    try:
        for i in range(num_scenes):
            synthetic.generate_image(np.random.default_rng([7, i]), 128)
    finally:
        synthetic._captions = draw_references
    references = [refs for _, refs in scenes]
    for k in range(5):  # an empty scene has 2 captions only: use its first
        candidates = [templates[k] if len(templates) == 5 else templates[0] for templates, _ in scenes]
        print(f"template {k}: BLEU-4 {corpus_bleu(candidates, references)[3]:.3f}  e.g. {scenes[3][0][k]!r}")


if __name__ == "__main__":
    main()
