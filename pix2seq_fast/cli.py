"""The ``pix2seq-fast`` command line.

    pix2seq-fast predict IMAGE... --checkpoint DIR --task detect --out DIR   COCO JSON + one PNG per image
    pix2seq-fast eval --checkpoint DIR --data DIR --split val [--tasks ...]  metrics table
    pix2seq-fast convert-tf CKPT_DIR OUT_DIR [...]                          authors' TF checkpoint -> ours
    pix2seq-fast make-synthetic --out DIR [...]                             synthetic COCO-format data set
    pix2seq-fast info                                                       build / runtime facts (JSON)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pix2seq_fast.vocab import TASKS

FORWARDING = ("convert-tf", "make-synthetic")  # their extra options go to the wrapped main()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def _expand_images(paths: list[str]) -> list[Path]:
    """Files as given; a directory gives its image files, sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image file or directory: {p}")
    if not out:
        raise ValueError(f"no images found in {paths}")
    return out


def _image_ids(files: list[Path]) -> list[int]:
    """COCO-style numeric file stems (``000000000139.jpg`` -> 139) when every stem is a distinct
    integer, else 1-based positions."""
    stems = [f.stem for f in files]
    if all(s.isdigit() for s in stems) and len(set(map(int, stems))) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(files) + 1))


def _png_names(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for f in files:
        count = seen.get(f.stem, 0)
        seen[f.stem] = count + 1
        names.append(f"{f.stem}.png" if count == 0 else f"{f.stem}_{count}.png")
    return names


def _decode_kwargs(args) -> dict:
    kw = dict(top_p=args.top_p, top_k=args.top_k, temperature=args.temperature, rule=args.rule,
              greedy=args.greedy, seed=args.seed, sampling_backend=args.sampling_backend,
              attention_backend=args.attention_backend)
    return kw


def _task_kwargs(args) -> dict:
    kw = {}
    if args.task in ("detect", "segment", "keypoints"):
        kw.update(score_threshold=args.threshold, max_detections=args.max_detections,
                  max_objects=args.max_objects, early_stop=args.early_stop)
    if args.task == "segment":
        kw.update(num_samples=args.num_samples, max_points=args.max_points)
    if args.task == "keypoints":
        kw.update(person_category=args.person_category)
    if args.task == "caption":
        kw.update(max_length=args.max_length)
    return kw


def _category_names(path: str | None) -> dict | None:
    """``{id: name}`` from a COCO annotation file's ``categories`` or a plain ``{"id": "name"}`` JSON."""
    if path is None:
        return None
    from pix2seq_fast.data.validate import is_int, read_coco_json  # noqa: PLC0415

    where = f"--category-names {path}"
    try:
        data = read_coco_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: file not found") from None
    except ValueError as e:
        raise ValueError(f"{where}: {str(e).removeprefix(str(path) + ': ')}") from None
    if isinstance(data, dict) and "categories" in data:
        cats = data["categories"]
        if not isinstance(cats, list):
            raise ValueError(f"{where}: field 'categories' must be a list")
        out = {}
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not is_int(c.get("id")) or not isinstance(c.get("name"), str):
                raise ValueError(f"{where}: categories[{i}] must be an object with an integer 'id' and a "
                                 f"string 'name', got {str(c)[:80]}")
            out[int(c["id"])] = c["name"]
        return out
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if not key.strip().lstrip("-").isdigit() or not isinstance(value, str):
                raise ValueError(f"{where}: entry {key!r}: expected an integer id mapped to a name string")
            out[int(key)] = value
        return out
    raise ValueError(f"{where}: expected a COCO annotation file or an id->name dict, got a JSON "
                     f"{type(data).__name__}")


def _load_model(args):
    """``Pix2Seq.from_pretrained(--checkpoint)``; any failure is one ``ValueError`` naming the folder."""
    from pix2seq_fast.model import Pix2Seq  # noqa: PLC0415

    path = Path(args.checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--checkpoint {path}: no such directory (give a save_pretrained() folder)")
    try:
        return Pix2Seq.from_pretrained(path, map_location=args.device)
    except Exception as e:  # noqa: BLE001 - safetensors, json, torch and sentencepiece each raise their own
        raise ValueError(f"--checkpoint {path}: cannot load the model ({one_line(e)})") from None


def one_line(error: BaseException) -> str:
    """``error`` as one line: its type and message (a DataLoader worker's: the original error)."""
    text = str(error).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:
        return lines[-1]
    first = lines[0] if lines else ""
    return f"{type(error).__name__}: {first}" if not isinstance(error, (ValueError, OSError)) else first


def cmd_predict(args) -> int:
    from pix2seq_fast.predictor import predict  # noqa: PLC0415
    from pix2seq_fast.visualize import draw, save_png  # noqa: PLC0415

    files = _expand_images(args.images)
    ids = _image_ids(files)
    names = _category_names(args.category_names)
    model = _load_model(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = predict(model, [str(f) for f in files], args.task, batch_size=args.batch_size,
                      progress=not args.quiet, device=args.device, **_decode_kwargs(args),
                      **_task_kwargs(args))
    coco = [r for res, image_id in zip(results, ids) for r in res.to_coco(image_id)]
    (out / "predictions.json").write_text(json.dumps(coco))
    (out / "image_ids.json").write_text(json.dumps({str(f): i for f, i in zip(files, ids)}, indent=1))
    if not args.no_draw:
        for f, res, png in zip(files, results, _png_names(files)):
            save_png(out / png, draw(str(f), res, category_names=names))
    print(f"{len(files)} image(s), {len(coco)} result(s) -> {out / 'predictions.json'}")
    return 0


def cmd_eval(args) -> int:
    from pix2seq_fast.predictor.coco_run import evaluate_model  # noqa: PLC0415

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: no such directory")
    model = _load_model(args)
    options = {} if args.max_objects is None else {"max_objects": args.max_objects}
    metrics = evaluate_model(model, args.data, args.split, tasks=args.tasks, image_dir=args.images,
                             max_images=args.max_images, batch_size=args.batch_size,
                             progress=not args.quiet, task_options=options, device=args.device,
                             seed=args.seed, allow_absolute_paths=args.allow_absolute_paths)
    print(format_metrics(metrics))
    return 0


def format_metrics(metrics: dict) -> str:
    """``{task: {metric: value}}`` (or a flat ``{metric: value}``) as an aligned text table."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows.extend((key, name, v) for name, v in value.items())
        else:
            rows.append(("", key, value))
    width = max([len("task")] + [len(r[0]) for r in rows])
    mwidth = max([len("metric")] + [len(r[1]) for r in rows])
    lines = [f"{'task':<{width}}  {'metric':<{mwidth}}  value", "-" * (width + mwidth + 12)]
    for task, name, value in rows:
        shown = (str(value) if isinstance(value, int) else f"{value:.4f}" if isinstance(value, float)
                 else str(value))
        lines.append(f"{task:<{width}}  {name:<{mwidth}}  {shown}")
    return "\n".join(lines)


def cmd_convert_tf(args) -> int:
    from pix2seq_fast.convert.convert import main as convert_main  # noqa: PLC0415

    return convert_main([args.ckpt_dir, args.out_dir, *args.rest]) or 0


def cmd_make_synthetic(args) -> int:
    from pix2seq_fast.data.synthetic import main as synthetic_main  # noqa: PLC0415

    synthetic_main(["--out", args.out, *args.rest])
    return 0


def cmd_info(args) -> int:
    from pix2seq_fast import build_info  # noqa: PLC0415

    print(json.dumps(build_info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pix2seq-fast", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="run a task on images; write COCO JSON and PNGs")
    p.add_argument("images", nargs="+", help="image files or directories of images")
    p.add_argument("--checkpoint", required=True, help="directory written by save_pretrained")
    p.add_argument("--task", default="detect", choices=TASKS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.0, help="minimum box score kept (and drawn)")
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--max-objects", type=int, default=100, help="objects generated per image")
    p.add_argument("--early-stop", action="store_true", help="stop detection at the first PAD")
    p.add_argument("--num-samples", type=int, default=8, help="segmentation samples per instance")
    p.add_argument("--max-points", type=int, default=128, help="segmentation points per sample")
    p.add_argument("--person-category", type=int, default=1, help="keypoints: person category id")
    p.add_argument("--max-length", type=int, default=128, help="caption tokens at most")
    p.add_argument("--top-p", type=float, default=None, help="default per task: 0.4/0.8/0.1/1.0")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--rule", default="pix2seq", choices=("pix2seq", "standard"))
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--sampling-backend", default="auto")
    p.add_argument("--attention-backend", default="auto")
    p.add_argument("--category-names", default=None,
                   help="COCO annotation JSON (its categories) or {id: name} JSON for the drawings")
    p.add_argument("--no-draw", action="store_true", help="skip the PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a COCO-format split")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="COCO-format data directory")
    p.add_argument("--split", default="val")
    p.add_argument("--tasks", nargs="+", default=None, choices=TASKS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--images", default=None, help="image directory (default DATA/images/SPLIT)")
    p.add_argument("--max-objects", type=int, default=None,
                   help="objects generated per image (default 100; not used by caption)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-absolute-paths", action="store_true",
                   help="accept absolute image file_names (default: every image lies inside the image folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert-tf", help="convert the authors' TF2 checkpoint to ours",
                       epilog="Other options (--config JSON, --no-verify) go to the converter.")
    p.add_argument("ckpt_dir")
    p.add_argument("out_dir")
    p.set_defaults(func=cmd_convert_tf)

    p = sub.add_parser("make-synthetic", help="write the synthetic COCO-format data set",
                       epilog="Other options (--num-train N --num-val N --image-size S --seed S "
                              "--format png|jpg) go to the generator.")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("info", help="print build_info() as JSON")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in FORWARDING:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as e:  # every bad file or option: one line, no traceback
        print(f"pix2seq-fast {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
