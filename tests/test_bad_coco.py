"""Bad COCO input never becomes a number: a corpus of malformed ground-truth and result files,
written by a fixture, each refused by the one validator with a message naming the file, the
annotation id and the field (``on_error="skip"`` drops and counts instead), before pycocotools
sees it. The cases that used to crash or hang pycocotools run in a subprocess under a timeout."""
import copy
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pix2seq_fast.data.coco import CocoCaptions, CocoFormatError, CocoInstances
from pix2seq_fast.data.validate import decode_rle_string, validate_coco, validate_results
from pix2seq_fast.eval import evaluate

H, W = 40, 60
PERSON_KEYPOINTS = [f"k{i}" for i in range(17)]


def _rle_string(mask: np.ndarray) -> str:
    from pycocotools import mask as mask_utils
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def clean_dataset() -> dict:
    """Two images, a box/polygon instance, a crowd RLE and a person with 17 keypoints."""
    crowd = np.zeros((H, W), np.uint8)
    crowd[5:15, 30:50] = 1
    kp = []
    for i in range(17):
        kp += [12.0 + i, 20.0 + i % 5, 2]
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "person", "keypoints": PERSON_KEYPOINTS},
                       {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 20.0, 10.0], "area": 200.0,
             "iscrowd": 0, "segmentation": [[2.0, 3.0, 22.0, 3.0, 22.0, 13.0, 2.0, 13.0]]},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30.0, 5.0, 20.0, 10.0], "area": 200.0,
             "iscrowd": 1, "segmentation": {"size": [H, W], "counts": _rle_string(crowd)}},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [10.0, 15.0, 25.0, 20.0], "area": 500.0,
             "iscrowd": 0, "segmentation": [[10.0, 15.0, 35.0, 15.0, 35.0, 35.0, 10.0, 35.0]],
             "keypoints": kp, "num_keypoints": 17},
        ],
    }


def perfect_predictions(data: dict) -> list:
    out = []
    for a in data["annotations"]:
        if a["iscrowd"]:
            continue
        p = {"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9, "bbox": a["bbox"],
             "segmentation": a["segmentation"]}
        if "keypoints" in a:
            p["keypoints"] = a["keypoints"]
        out.append(p)
    return out


def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(ann_id, key, value):
    def mutate(data):
        _ann(data, ann_id)[key] = value
    return mutate


def _seg_part(ann_id, index, value):
    def mutate(data):
        _ann(data, ann_id)["segmentation"][0][index] = value
    return mutate


def _rle(ann_id, **fields):
    def mutate(data):
        _ann(data, ann_id)["segmentation"].update(fields)
    return mutate


def _duplicate_annotation(data):
    data["annotations"].append(dict(copy.deepcopy(_ann(data, 10)), image_id=2))


# Annotation-level faults: (mutation, annotation id named in the message, field, words of the message).
BAD_ANNOTATIONS = {
    "bbox NaN": (_set(10, "bbox", [2.0, float("nan"), 20.0, 10.0]), 10, "bbox", "finite numbers"),
    "bbox inf": (_set(10, "bbox", [2.0, 3.0, float("inf"), 10.0]), 10, "bbox", "finite numbers"),
    "bbox negative width": (_set(10, "bbox", [2.0, 3.0, -20.0, 10.0]), 10, "bbox", "negative size"),
    "bbox three numbers": (_set(10, "bbox", [2.0, 3.0, 20.0]), 10, "bbox", "4 finite numbers"),
    "bbox strings": (_set(10, "bbox", ["2", "3", "20", "10"]), 10, "bbox", "4 finite numbers"),
    "bbox booleans": (_set(10, "bbox", [True, True, True, True]), 10, "bbox", "4 finite numbers"),
    "bbox beyond float32": (_set(10, "bbox", [1e39, 3.0, 20.0, 10.0]), 10, "bbox", "float32"),
    "bbox outside the image": (_set(10, "bbox", [500.0, 3.0, 20.0, 10.0]), 10, "bbox", "outside"),
    "bbox missing": (lambda d: _ann(d, 10).pop("bbox"), 10, "bbox", "missing"),
    "unknown image": (_set(10, "image_id", 99), 10, "image_id", "unknown image_id 99"),
    "annotation of a string image_id": (_set(10, "image_id", "1"), 10, "image_id", "unknown image_id '1'"),
    "unknown category": (_set(10, "category_id", 77), 10, "category_id", "unknown category_id 77"),
    "duplicate annotation id": (_duplicate_annotation, 10, "id", "duplicate annotation id 10"),
    "float annotation id": (_set(10, "id", 10.5), 10.5, "id", "integer"),
    "iscrowd 2": (_set(10, "iscrowd", 2), 10, "iscrowd", "0 or 1"),
    "area NaN": (_set(10, "area", float("nan")), 10, "area", "finite number"),
    "area negative": (_set(10, "area", -4.0), 10, "area", "finite number"),
    "polygon odd length": (lambda d: _ann(d, 10)["segmentation"][0].append(4.0), 10, "segmentation",
                           "odd length"),
    "polygon NaN": (_seg_part(10, 1, float("nan")), 10, "segmentation", "finite numbers"),
    "polygon inf": (_seg_part(10, 0, float("-inf")), 10, "segmentation", "finite numbers"),
    "polygon string": (_seg_part(10, 0, "x"), 10, "segmentation", "finite numbers"),
    "polygon far outside": (_seg_part(10, 0, 1e12), 10, "segmentation", "outside"),
    "segmentation a string": (_set(10, "segmentation", "poly"), 10, "segmentation", "polygon list or an RLE"),
    "RLE counts overrun the image": (_rle(11, counts=[0, H * W + 5]), 11, "segmentation", "sum to"),
    "RLE counts negative": (_rle(11, counts=[H * W + 10, -10]), 11, "segmentation", "negative"),
    "RLE garbage string": (_rle(11, counts="\x01\x7f garbage"), 11, "segmentation", "invalid character"),
    "RLE truncated string": (_rle(11, counts="PPP"), 11, "segmentation", "middle of a number"),
    "RLE string of another size": (_rle(11, counts=_rle_string(np.ones((H, W + 1)))), 11, "segmentation",
                                   "sum to"),
    "RLE size differs": (_rle(11, size=[H, W + 1]), 11, "segmentation", f"[{H}, {W}]"),
    "RLE without counts": (lambda d: _ann(d, 11)["segmentation"].pop("counts"), 11, "segmentation",
                           "'size' and 'counts'"),
    "keypoints short": (lambda d: _ann(d, 12).__setitem__("keypoints", _ann(d, 12)["keypoints"][:-3]), 12,
                        "keypoints", "51 finite numbers"),
    "keypoints NaN": (lambda d: _ann(d, 12)["keypoints"].__setitem__(0, float("nan")), 12, "keypoints",
                      "51 finite numbers"),
    "keypoint visibility 3": (lambda d: _ann(d, 12)["keypoints"].__setitem__(2, 3), 12, "keypoints",
                              "visibility"),
}

# Frame faults (images, categories, top level): always raise, naming the file and the entry.
BAD_FRAMES = {
    "top-level list": (lambda d: [d], "JSON object at the top level"),
    "images not a list": (lambda d: d.__setitem__("images", {"1": {}}), "'images' list"),
    "no categories": (lambda d: d.pop("categories"), "'categories' list"),
    "image not an object": (lambda d: d["images"].__setitem__(0, 7), "images[0]"),
    "string image id": (lambda d: d["images"][0].__setitem__("id", "1"), "field 'id'"),
    "duplicate image id": (lambda d: d["images"][1].__setitem__("id", 1), "duplicates an earlier image"),
    "image without height": (lambda d: d["images"][0].pop("height"), "field 'height'"),
    "image of width 0": (lambda d: d["images"][0].__setitem__("width", 0), "field 'width'"),
    "image without file_name": (lambda d: d["images"][0].pop("file_name"), "field 'file_name'"),
    "oversize image": (lambda d: d["images"][0].update(height=100000, width=100000), "exceeds the limit"),
    "category without id": (lambda d: d["categories"][1].pop("id"), "category id '?'"),
    "duplicate category id": (lambda d: d["categories"][1].__setitem__("id", 1), "duplicates an earlier category"),
    "keypoint names not strings": (lambda d: d["categories"][0].__setitem__("keypoints", [1, 2]),
                                   "field 'keypoints'"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """{case: path} of the bad files, plus ``"clean"`` and a few unreadable files."""
    root = tmp_path_factory.mktemp("bad_coco")
    paths = {}

    def write(name, data):
        path = root / (name.replace(" ", "_") + ".json")
        path.write_text(json.dumps(data))
        paths[name] = str(path)

    write("clean", clean_dataset())
    for name, (mutate, *_rest) in {**BAD_ANNOTATIONS, **BAD_FRAMES}.items():
        data = clean_dataset()
        result = mutate(data)
        write(name, result if name == "top-level list" else data)
    (root / "not_json.json").write_text("{\"images\": [")
    (root / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (root / "latin1.json").write_bytes(b"\xff\xfe{}")
    paths.update(not_json=str(root / "not_json.json"), deep=str(root / "deep.json"),
                 latin1=str(root / "latin1.json"))
    return paths


def test_clean_ground_truth_scores_one(corpus):
    data = json.loads(open(corpus["clean"]).read())
    out = evaluate(perfect_predictions(data), corpus["clean"], verbose=False)
    assert out["bbox"]["AP"] == pytest.approx(1.0) and out["segm"]["AP"] == pytest.approx(1.0)
    assert out["keypoints"]["AP"] == pytest.approx(1.0)
    assert len(CocoInstances(corpus["clean"], "imgs").instances(1)) == 2


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotation_named_or_skipped_everywhere(corpus, case):
    _, ann_id, field, words = BAD_ANNOTATIONS[case]
    path = corpus[case]
    with pytest.raises(CocoFormatError) as err:
        CocoInstances(path, "imgs")
    message = str(err.value)
    assert path in message and f"annotation id {ann_id!r}" in message and f"field '{field}'" in message
    assert words in message, message
    data = json.loads(open(path).read())
    with pytest.raises(ValueError) as err_eval:  # evaluation refuses it too: no AP from bad ground truth
        evaluate(perfect_predictions(clean_dataset()), path, iou_types="bbox", verbose=False)
    assert path in str(err_eval.value) and f"field '{field}'" in str(err_eval.value)
    loaded = CocoInstances(path, "imgs", on_error="skip")
    assert loaded.skipped == 1
    kept = sum(len(loaded.instances(i)) for i in loaded.image_ids)
    assert kept == len(data["annotations"]) - 1
    clean, report = validate_coco(data, path, on_error="skip")
    assert report.skipped == 1 and len(clean["annotations"]) == len(data["annotations"]) - 1
    assert words in report.problems[0]


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frame_always_raises(corpus, case):
    _, words = BAD_FRAMES[case]
    for on_error in ("raise", "skip"):
        with pytest.raises(CocoFormatError) as err:
            CocoInstances(corpus[case], "imgs", on_error=on_error)
        assert corpus[case] in str(err.value) and words in str(err.value), str(err.value)
    with pytest.raises(ValueError) as err:
        evaluate([], corpus[case], iou_types="bbox", verbose=False)
    assert corpus[case] in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("name, words", [("not_json", "not valid JSON"), ("deep", "nested too deeply"),
                                         ("latin1", "not valid JSON")])
def test_unreadable_files_are_one_clear_error(corpus, name, words):
    for reader in (lambda p: CocoInstances(p, "imgs"), lambda p: CocoCaptions(p, "imgs"),
                   lambda p: evaluate([], p, verbose=False), lambda p: evaluate(p, corpus["clean"], verbose=False)):
        with pytest.raises(ValueError) as err:
            reader(corpus[name])
        assert corpus[name] in str(err.value) and words in str(err.value)


def test_zero_size_boxes_are_no_training_targets(tmp_path):
    data = clean_dataset()
    _ann(data, 10)["bbox"] = [2.0, 3.0, 0.0, 10.0]
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(data))
    loaded = CocoInstances(path, "imgs")
    assert loaded.degenerate_boxes == 1 and list(loaded.instances(1).ann_ids) == [11]
    assert 10 in {a["id"] for a in loaded.coco.dataset["annotations"]}  # still ground truth for evaluation


def test_ground_truth_categories_need_class_tokens(tmp_path):
    from types import SimpleNamespace

    from pix2seq_fast.predictor.coco_run import evaluate_model
    from pix2seq_fast.vocab import Vocab
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images" / "val").mkdir(parents=True)
    data = clean_dataset()
    data["categories"][1]["id"] = 950
    _ann(data, 10)["category_id"] = _ann(data, 11)["category_id"] = 950
    path = tmp_path / "annotations" / "instances_val.json"
    path.write_text(json.dumps(data))
    model = SimpleNamespace(config=SimpleNamespace(vocab=Vocab()))
    with pytest.raises(ValueError, match=r"instances_val.json: field 'categories': category ids \[950\]"):
        evaluate_model(model, tmp_path, "val", tasks=["detect"])


def test_bad_captions(tmp_path):
    base = {"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
            "annotations": [{"id": 1, "image_id": 1, "caption": "a cat"}, {"id": 2, "image_id": 1, "caption": "x"}]}
    cases = {"empty": ({"caption": "   "}, "non-empty string"), "number": ({"caption": 5}, "non-empty string"),
             "missing image": ({"image_id": 9}, "unknown image_id 9"), "duplicate id": ({"id": 1}, "duplicate")}
    for name, (change, words) in cases.items():
        data = copy.deepcopy(base)
        data["annotations"][1].update(change)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(CocoFormatError, match=words) as err:
            CocoCaptions(path, tmp_path)
        assert str(path) in str(err.value) and "field '" in str(err.value)
        skipped = CocoCaptions(path, tmp_path, on_error="skip")
        assert skipped.skipped == 1 and len(skipped) == 1


def test_rle_string_decoder_matches_pycocotools():
    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(1, 300, 2)
        mask = rng.random((h, w)) < rng.random()
        counts = _rle_string(mask)
        runs = decode_rle_string(counts).tolist()
        assert sum(runs) == h * w and min(runs) >= 0
        rebuilt = mask_utils.frPyObjects({"size": [int(h), int(w)], "counts": runs}, int(h), int(w))
        assert np.array_equal(mask_utils.decode(rebuilt), mask.astype(np.uint8))


# ---- predictions --------------------------------------------------------------------------------
GOOD = {"image_id": 1, "category_id": 3, "score": 0.5, "bbox": [2.0, 3.0, 20.0, 10.0]}
BAD_RESULTS = {
    "score NaN": ("bbox", dict(GOOD, score=float("nan")), "score"),
    "score inf": ("bbox", dict(GOOD, score=float("inf")), "score"),
    "score string": ("bbox", dict(GOOD, score="0.5"), "score"),
    "score bool": ("bbox", dict(GOOD, score=True), "score"),
    "no score": ("bbox", {k: v for k, v in GOOD.items() if k != "score"}, "score"),
    "image unknown": ("bbox", dict(GOOD, image_id=9), "image_id"),
    "image id string": ("bbox", dict(GOOD, image_id="1"), "image_id"),
    "category unknown": ("bbox", dict(GOOD, category_id=2), "category_id"),
    "bbox NaN": ("bbox", dict(GOOD, bbox=[0, float("nan"), 1, 1]), "bbox"),
    "bbox negative": ("bbox", dict(GOOD, bbox=[0, 0, -1, 1]), "bbox"),
    "bbox short": ("bbox", dict(GOOD, bbox=[0, 0, 1]), "bbox"),
    "polygon NaN": ("segm", dict(GOOD, segmentation=[[1, 1, float("nan"), 5, 9, 9]]), "segmentation"),
    "polygon tiny": ("segm", dict(GOOD, segmentation=[[1, 1, 5, 5]]), "segmentation"),
    "polygon far away": ("segm", dict(GOOD, segmentation=[[1, 1, 1e15, 5, 9, 9]]), "segmentation"),
    "RLE garbage": ("segm", dict(GOOD, segmentation={"size": [H, W], "counts": "\x05garbage"}), "segmentation"),
    "RLE overrun": ("segm", dict(GOOD, segmentation={"size": [H, W], "counts": [0, H * W * 9]}), "segmentation"),
    "RLE other size": ("segm", dict(GOOD, segmentation={"size": [3, 3], "counts": "0"}), "segmentation"),
    "keypoints short": ("keypoints", dict(GOOD, category_id=1, keypoints=[1.0, 2.0, 2.0] * 16), "keypoints"),
    "keypoints NaN": ("keypoints", dict(GOOD, category_id=1, keypoints=[float("nan"), 2.0, 2.0] * 17), "keypoints"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_prediction_names_its_index_and_field(corpus, case):
    iou_type, bad, field = BAD_RESULTS[case]
    good = dict(GOOD, category_id=1, keypoints=[12.0, 20.0, 2.0] * 17) if iou_type == "keypoints" else dict(
        GOOD, segmentation=[[2.0, 3.0, 22.0, 3.0, 22.0, 13.0]])
    with pytest.raises(ValueError, match=rf"predictions\[1\]: .*{field}|predictions\[1\] has no '{field}'"):
        evaluate([good, bad], corpus["clean"], iou_types=iou_type, verbose=False)
    gt, _ = validate_coco(clean_dataset())
    with pytest.raises(ValueError, match=rf"results\[0\]"):
        validate_results([bad], gt, iou_type, source="results")


def test_prediction_file_errors_name_the_file(corpus, tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps([GOOD, dict(GOOD, score=float("nan"))]))
    with pytest.raises(ValueError, match=rf"{path}\[1\]: field 'score'"):
        evaluate(str(path), corpus["clean"], iou_types="bbox", verbose=False)
    path.write_text(json.dumps("nope"))
    with pytest.raises(ValueError, match="list of COCO result dicts"):
        evaluate(str(path), corpus["clean"], iou_types="bbox", verbose=False)


def test_skip_mode_evaluates_the_rest(corpus):
    # the broken car box is left out of the ground truth: the car prediction matching it is a miss
    out = evaluate(perfect_predictions(clean_dataset()), corpus["bbox NaN"], iou_types="bbox", verbose=False,
                   on_error="skip")
    assert 0.0 < out["bbox"]["AP"] < 1.0


def test_what_crashed_or_hung_pycocotools_is_refused_in_time(corpus, tmp_path):
    """A NaN polygon (segfault), an overrunning crowd RLE and garbage RLE strings (hangs), in ground
    truth and in predictions: each must be refused by validation, so the child ends at once."""
    cases = {"gt": [corpus[c] for c in ("polygon NaN", "RLE counts overrun the image", "RLE garbage string",
                                        "RLE truncated string", "RLE counts negative")],
             "pred": [BAD_RESULTS[c][1] for c in ("polygon NaN", "RLE garbage", "RLE overrun")]}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = textwrap.dedent(f"""
        import json
        from pix2seq_fast.eval import evaluate
        from pix2seq_fast.data.coco import CocoInstances
        cases = json.load(open({str(tmp_path / 'cases.json')!r}))
        refused = 0
        for path in cases["gt"]:
            for run in (lambda: evaluate([], path, iou_types="segm", verbose=False),
                        lambda: CocoInstances(path, "imgs")):
                try:
                    run()
                except ValueError:
                    refused += 1
        for pred in cases["pred"]:
            try:
                evaluate([pred], {corpus['clean']!r}, iou_types="segm", verbose=False)
            except ValueError:
                refused += 1
        print("refused", refused)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"refused {2 * len(cases['gt']) + len(cases['pred'])}" in proc.stdout
