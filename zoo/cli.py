"""``zoo``: train, evaluate and predict from recipes and checkpoints; list and summarise backbones; check recipes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from zoo import version as zoo_version
from zoo.errors import ZooError

__all__ = ["main"]

_OVERRIDES_HELP = "dotted.path=value overrides, e.g. trainer.max_epochs=3 optim.lr=0.01 data.root=PATH"


def _print_metrics(metrics: dict[str, float]) -> None:
    width = max(map(len, metrics), default=0)
    for k, v in metrics.items():
        print(f"  {k:<{width}}  {v:.4f}")


def cmd_train(args: argparse.Namespace) -> int:
    from zoo.engine import train
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or f"runs/{recipe.name}")
    metrics = train(recipe, out, resume=args.resume, overwrite=args.overwrite)
    if not metrics:  # another rank of a data-parallel run: the main process reports
        return 0
    print(f"test metrics of {out / 'best.ckpt'}:")
    _print_metrics(metrics)
    print(f"run folder: {out}  (report: {out / 'report.html'})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from zoo.report import write_report

    print(f"wrote {write_report(args.run, out=args.out)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from zoo.engine import evaluate

    if args.gt or args.dt:  # a COCO ground truth against a COCO results file, no model involved
        from zoo.detection_eval import coco_evaluate_files

        if args.checkpoint:
            raise ZooError("zoo eval takes a CHECKPOINT or --gt GT.json --dt DT.json, not both")
        if not (args.gt and args.dt):
            raise ZooError("zoo eval --gt GT.json needs --dt DT.json too (and --dt needs --gt)")
        metrics = coco_evaluate_files(args.gt, args.dt, backend=args.backend).metrics
        print(f"COCO box metrics of {args.dt} against {args.gt}:")
    elif not args.checkpoint:
        raise ZooError("zoo eval needs a CHECKPOINT or --gt GT.json --dt DT.json (see zoo eval --help)")
    else:
        out = Path(args.out) if args.out else Path(args.json).parent if args.json else None
        from zoo.recipe.tree import parse_override

        # CHECKPOINT A.ckpt B.ckpt ...: an ensemble; arguments with "=" are recipe overrides
        members = [a for a in args.overrides if "=" not in a]
        overrides = dict(parse_override(text) for text in args.overrides if "=" in text)
        if members or args.tta:
            from zoo.ensemble import evaluate_ensemble

            if args.out:
                raise ZooError("--out (the task's pictures) is for one checkpoint; an ensemble or --tta "
                               "evaluation writes metrics only (--json)")
            metrics = evaluate_ensemble([args.checkpoint, *members], split=args.split, overrides=overrides,
                                        tta=[args.tta] if args.tta else [])
            tta = f" with --tta {args.tta}" if args.tta else ""
            print(f"{args.split} metrics of the ensemble of {', '.join([args.checkpoint, *members])}{tta}:")
        else:
            metrics = evaluate(args.checkpoint, split=args.split, out=out, overrides=overrides)
            print(f"{args.split} metrics of {args.checkpoint}:")
    _print_metrics(metrics)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1))
        print(f"wrote {args.json}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from zoo.inference import load, predict_files
    from zoo.recipe.tree import parse_override

    # An argument with "=" that is no existing path is a recipe override (model.head.score_threshold=0.3).
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    members = [a for a in args.inputs if a.endswith(".ckpt") and Path(a).is_file()]  # an ensemble's other members
    inputs = [a for a in args.inputs if a not in overrides and a not in members]
    if not inputs:
        raise ZooError("zoo predict needs at least one IMAGE_OR_DIR besides the overrides")
    model = load([args.checkpoint, *members], device=args.device, batch_size=args.batch_size,
                 tta=[args.tta] if args.tta else [],
                 overrides=dict(parse_override(o) for o in overrides))
    found = predict_files(model, inputs, out=args.out)
    if args.out:
        print(f"wrote {len(found.results)} predictions to {Path(args.out) / 'predictions.json'}")
    else:
        print(json.dumps(found.results, indent=1))
    if found.skipped:
        where = f" (listed in {Path(args.out) / 'skipped.json'})" if args.out else ""
        print(f"skipped {len(found.skipped)} undecodable file(s){where}: "
              + ", ".join(path for path, _ in found.skipped), file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zoo.export import export
    from zoo.recipe.tree import parse_override

    out, info = export(args.checkpoint, fmt=args.format, out=args.out, dynamic_batch=args.dynamic_batch,
                       batch=args.batch, opset=args.opset, input_dtype=args.input,
                       overrides=dict(parse_override(o) for o in args.overrides))
    shape = "x".join(str(d) for d in info["input"]["shape"])
    print(f"wrote {out} ({args.format}; input {info['input']['name']} {info['input']['dtype']} {shape}, "
          f"resize {info['input']['resize']}; outputs {', '.join(info['outputs'])})")
    print(f"wrote {out}.json (metadata)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from heads.vae import interpolate, sample

    if args.interpolate:
        path = interpolate(args.checkpoint, *args.interpolate, steps=args.steps, out=args.out)
    else:
        path = sample(args.checkpoint, n=args.n, out=args.out, seed=args.seed)
    print(f"wrote {path}")
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from zoo.backbones import create_backbone, list_backbones

    rows = [r for r in list_backbones(args.pattern) if not args.source or r[1] == args.source]
    if args.features and len(rows) > 50:
        raise ZooError(f"--features builds every listed model; narrow the {len(rows)} names with a PATTERN")
    for name, source in rows:
        line = f"{name:<48} {source}"
        if args.features:
            try:
                info = create_backbone(name).feature_info
                line += "  channels=" + ",".join(str(f.channels) for f in info)
                line += "  strides=" + ",".join(str(f.stride) for f in info)
            except ZooError as e:
                line += f"  ({e})"
        print(line)
    print(f"{len(rows)} backbones", file=sys.stderr)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from zoo.engine.tune import find_batch_size, find_lr
    from zoo.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out or f"runs/tune_{recipe.name}")
    if args.what == "lr":
        result = find_lr(recipe, out, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps)
        if result["suggestion"] is None:
            print(f"no suggestion: the loss curve has {result['steps']} points (too few, or it diverged at once); "
                  f"try more --steps or a lower --max-lr")
        else:
            print(f"suggested optim.lr={result['suggestion']:.3g} (the recipe has {result['recipe_lr']:g})")
        print(f"plot: {out / 'lr_find.png'}; curve: {out / 'lr_find.json'}")
    else:
        size = find_batch_size(recipe, out, max_trials=args.max_trials)
        print(f"largest data.batch_size that fits: {size} (the recipe has {recipe.data.batch_size}); scale optim.lr "
              f"with it (linear scaling rule) if you change it")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from zoo.recipe import load_recipe

    from zoo.engine.run import check_model

    recipe = load_recipe(args.recipe, args.overrides)
    recipe.data.preflight()
    model = check_model(recipe)
    print(recipe.listing(comments=True))
    heads = ", ".join(f"{name or 'head'} ({type(spec).task.name})" for name, (spec, _) in recipe.heads().items())
    params = sum(p.numel() for p in model.parameters())
    monitor, mode = recipe.monitor()
    print(f"ok: {args.recipe}: {heads}; model builds ({params:,} parameters); monitors val/{monitor} ({mode})",
          file=sys.stderr)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from zoo.summary import parse_input, summarize, write_json

    summary = summarize(args.target, input_shape=parse_input(args.input) if args.input else None,
                        num_classes=args.num_classes, backbone_only=args.backbone_only)
    print(summary.table())
    if args.json:
        write_json(summary, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def cmd_viz(args: argparse.Namespace) -> int:
    from zoo.viz import visualize

    paths = visualize(args.target, args.what, image=args.image, out=args.out, wanted=args.cls, unit=args.unit,
                      layer=args.layer, top_k=args.top_k, split=args.split, pretrained=args.pretrained or False,
                      head=args.head)
    for path in paths:
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.replace("``", ""))
    parser.add_argument("--version", action="version", version=f"zoo {zoo_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a recipe; writes best.ckpt, last.ckpt, metrics.json, logs, curves.png, "
                                     "report.html",
                       description="Train RECIPE (a Python recipe file), then evaluate best.ckpt on the test split.")
    p.add_argument("recipe", help="recipe file, e.g. recipes/classify_digits_lenet5.py")
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    p.add_argument("--out", help="run folder (default runs/<recipe name>); one that already holds a run is refused "
                                 "unless --resume or --overwrite")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.ckpt (epoch, "
                   "optimizer, schedule, best checkpoint, early stopping, random states) with the recipe stored "
                   "there; only trainer.max_epochs/max_time/accelerator/devices/strategy/log_every_n_steps and "
                   "data.num_workers may change")
    p.add_argument("--overwrite", action="store_true", help="remove the run already in --out (its checkpoints, logs, "
                   "pictures) and start clean")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="metrics of a checkpoint on a split of its recipe's data, or of COCO detections",
                       description="Evaluate CHECKPOINT; the recipe inside it says which data. Or, with --gt and --dt "
                                   "instead of a checkpoint, evaluate any COCO results file against any COCO "
                                   "ground truth (box mAP@[.5:.95] as map, map50, map75, per-area and per-class AP, "
                                   "computed by pycocotools).")
    p.add_argument("checkpoint", nargs="?", help="a zoo checkpoint (leave out with --gt/--dt)")
    p.add_argument("overrides", nargs="*", help="more checkpoints (an ensemble of models of the same heads and "
                                                "classes: averaged class / per-pixel probabilities, detections "
                                                "pooled into one class-wise NMS, averaged reconstructions) and "
                                                "dotted.path=value changes to the checkpoint's recipe that keep the "
                                                "weights' shapes, e.g. model.head.beam_size=1 data.num_workers=0; "
                                                "right after CHECKPOINT, before any --option")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--gt", metavar="GT.json", help="COCO ground-truth file (images, categories, annotations)")
    p.add_argument("--dt", metavar="DT.json", help="COCO results file: a JSON list of {image_id, category_id, "
                                                   "bbox [x, y, w, h], score}")
    p.add_argument("--backend", default="pycocotools", choices=("pycocotools", "faster_coco_eval"),
                   help="with --gt/--dt: the COCO evaluator (same numbers; faster_coco_eval is faster, "
                        "pip install 'zoo[fast]')")
    p.add_argument("--json", help="write a flat JSON object of metric name -> number to this file")
    p.add_argument("--out", metavar="DIR", help="write the task's pictures (confusion matrix, PR curves, "
                                                "prediction grid, worst examples), evaluation.json and report.html "
                                                "to DIR (default: the --json file's folder)")
    p.add_argument("--tta", choices=("hflip",), help="test-time augmentation: also run on horizontally flipped "
                                                    "images, map the outputs back (boxes, masks) and average")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("predict", help="predictions for image files or folders, as JSON",
                       description="Run CHECKPOINT on images; prints JSON (or writes DIR/predictions.json). Files "
                                   "that cannot be decoded are skipped with a warning naming each (and listed in "
                                   "DIR/skipped.json); the exit status is 0 unless no file could be predicted. "
                                   "From Python: zoo.load(CHECKPOINT).predict(...).")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                   help="image files or folders; further *.ckpt files make an ensemble (see zoo eval); arguments of the form dotted.path=value change the checkpoint's "
                        "recipe, e.g. a head's predict options: model.head.top_k=3, model.head.score_threshold=0.3 "
                        "model.head.iou_threshold=0.5 model.head.max_detections=50, model.head.beam_size=1 "
                        "(model.heads.NAME.FIELD for a named head)")
    p.add_argument("--out", help="folder for predictions.json, the task's own formats (detection: COCO results) and "
                                 "each image with its prediction drawn, in images/ in the input's file type (default: "
                                 "print JSON to stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (the GPU when present; default), cpu, cuda, cuda:N")
    p.add_argument("--tta", choices=("hflip",), help="test-time augmentation: also run on horizontally flipped "
                                                    "images, map the outputs back (boxes, masks) and average")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("report", help="rebuild a run folder's report.html (curves, metrics, pictures, worst examples)",
                       description="Rebuild RUN_DIR/report.html from the run folder's files alone: the recipe, the "
                                   "data's classes and counts, training curves of every logged scalar (curves.png is "
                                   "redrawn), the last evaluation's metrics and pictures and its worst examples. "
                                   "One self-contained HTML file (pictures embedded, no network, no script). Works "
                                   "for interrupted runs and runs of older versions; what is missing is said on the "
                                   "page.")
    p.add_argument("run", metavar="RUN_DIR", help="a folder written by zoo train (or zoo eval --out)")
    p.add_argument("--out", metavar="FILE.html", help="where to write it (default RUN_DIR/report.html)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("export", help="a checkpoint as one ONNX or TorchScript graph, preprocessing and decoding "
                                      "inside", description="Export CHECKPOINT as a graph that takes an image batch "
                       "[N, C, S, S] at the recipe's input size (uint8 0..255, or float 0..1 with --input float), "
                       "normalises it, and returns each head's decoded outputs: classification logits/probs; "
                       "detection boxes/scores/labels/batch_index after class-wise NMS with the head's "
                       "score_threshold/iou_threshold/max_detections; segmentation probs/mask; captioning greedy "
                       "tokens; reconstructions. Metadata (tasks, classes, input size, resize mode, mean/std, zoo "
                       "version) goes into the file and FILE.json. A model that cannot be exported is refused with "
                       "the reason, and no file is left. See docs/deploy.md.")
    p.add_argument("checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted.path=value changes to the saved recipe, e.g. "
                                                "model.head.score_threshold=0.3 (baked into the graph)")
    p.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="default onnx")
    p.add_argument("--out", metavar="FILE", help="default: beside the checkpoint, best.onnx or best.torchscript.pt")
    p.add_argument("--dynamic-batch", action="store_true", help="the batch size is free (default: fixed at --batch)")
    p.add_argument("--batch", type=int, default=1, help="the batch size traced (and fixed without --dynamic-batch; "
                                                        "default 1)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    p.add_argument("--input", default="uint8", choices=("uint8", "float"),
                   help="the graph's input: uint8 pixels 0..255 (default) or float pixels in [0, 1]")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("sample", help="draw images from a generative checkpoint (VAE): prior samples or an "
                                      "interpolation", description="Decode --n latent codes drawn from the prior of "
                       "CHECKPOINT's head (a VAE) into one grid PNG; or, with --interpolate, decode --steps codes on "
                       "the line between two images' codes (picture: first | steps | second).")
    p.add_argument("checkpoint", help="a checkpoint whose head has a prior, e.g. runs/vae_digits/best.ckpt")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=64, help="samples to draw (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seeds the prior draws: same seed, same picture (default 0)")
    p.add_argument("--interpolate", nargs=2, metavar=("IMAGE1", "IMAGE2"), help="interpolate between two images")
    p.add_argument("--steps", type=int, default=8, help="--interpolate: decoded points, ends included (default 8)")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("backbones", help="list registered backbones",
                       description="List backbone names and their source (zoo > timm > torchvision/).")
    p.add_argument("pattern", nargs="?", help="substring or shell pattern, e.g. resnet or 'convnext_*'")
    p.add_argument("--source", choices=("zoo", "timm", "torchvision"))
    p.add_argument("--features", action="store_true", help="also build each and show channels and strides")
    p.set_defaults(fn=cmd_backbones)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, activation memory and FLOPs of a model",
                       description="Summarise a backbone NAME or a CHECKPOINT layer by layer: output shape [C, H, W], "
                                   "parameters, fp32 activation bytes per image, FLOPs, and totals with an estimate of "
                                   "the training memory. A zoo family with a published classifier (alexnet, vgg16_d, "
                                   "googlenet, resnet50_v1, ...) is summarised with it, so the totals are the "
                                   "paper's; other names as the feature extractor.")
    p.add_argument("target", metavar="NAME_OR_CHECKPOINT", help="e.g. vgg16_d, resnet18, runs/demo/best.ckpt")
    p.add_argument("--input", metavar="CxHxW", help="input image size, e.g. 3x227x227 (default: the backbone's "
                                                    "design input; a checkpoint's recipe image size)")
    p.add_argument("--num-classes", type=int, help="classes of the paper's classifier (default: the paper's "
                                                   "data set, 1000 for ImageNet nets, 10 for CIFAR nets)")
    p.add_argument("--backbone-only", action="store_true", help="leave out the paper's classifier")
    p.add_argument("--json", metavar="FILE", help="also write the table and totals as JSON")
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("viz", help="pictures: filters, activations, saliency, guided backprop, Grad-CAM, top-k",
                       description="Write PNG pictures of what a model computes (docs/viz.md). CHECKPOINT_OR_NAME is "
                                   "a zoo checkpoint (every picture) or a backbone name (filters and activations "
                                   "only: a bare backbone has no head to explain and no data set to search).")
    p.add_argument("target", metavar="CHECKPOINT_OR_NAME", help="e.g. runs/demo/best.ckpt, resnet20, lenet5")
    p.add_argument("--what", default="all", choices=("filters", "activations", "saliency", "guided", "gradcam",
                                                     "topk", "all"),
                   help="filters: first-layer convolution kernels; activations: every layer's maps for one image; "
                        "saliency: input-gradient saliency (Simonyan et al.); guided: guided backpropagation; "
                        "gradcam: Grad-CAM over the image; topk: the data set images that most activate a unit; "
                        "all: every picture the target allows (default)")
    p.add_argument("--image", metavar="FILE", help="image for activations, saliency, guided and gradcam (default for "
                                                   "a checkpoint: the first image of its test split; a backbone name "
                                                   "needs one)")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: viz/ next to the checkpoint, "
                                                "runs/viz/NAME for a backbone name)")
    p.add_argument("--class", dest="cls", metavar="C", help="class name or index explained by saliency, guided and "
                                                            "gradcam (default: the predicted class)")
    p.add_argument("--unit", type=int, default=0, metavar="U", help="channel of the feature level that topk ranks "
                                                                    "images by (mean activation; default 0)")
    p.add_argument("--level", "--layer", dest="layer", type=int, metavar="L", help="feature level (index into the backbone's feature maps, "
                                                          "negative from the deepest) for gradcam (default: the "
                                                          "deepest map larger than 1x1) and topk (default: -1)")
    p.add_argument("--top-k", type=int, default=9, metavar="K", help="images shown by topk (default 9)")
    p.add_argument("--head", metavar="NAME", help="a multi-head checkpoint's head to explain (default: the first "
                                                  "whose task has a class score: classification, localization, "
                                                  "detection, segmentation)")
    p.add_argument("--split", default="val", choices=("val", "test"), help="split of the checkpoint's data set "
                                                                           "that topk searches (default val)")
    p.add_argument("--pretrained", nargs="?", const=True, metavar="WEIGHTS",
                   help="for a backbone name: load weights, as model.backbone.pretrained takes them (no value: the "
                        "library's default weights; a timm/torchvision tag; a local file). Default: untrained")
    p.set_defaults(fn=cmd_viz)

    p = sub.add_parser("tune", help="find a learning rate (range test) or the largest batch that fits the GPU",
                       description="lr: Lightning's learning-rate range test on RECIPE (training steps with a rising "
                                   "learning rate; the model is restored afterwards), printing a suggested optim.lr "
                                   "and writing lr_find.png and lr_find.json to --out. batch: the largest "
                                   "data.batch_size whose training step fits in GPU memory (needs a CUDA GPU).")
    p.add_argument("what", choices=("lr", "batch"), help="lr: learning-rate finder; batch: batch-size finder")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    p.add_argument("--out", metavar="DIR", help="folder for lr_find.png / lr_find.json (default runs/tune_<name>)")
    p.add_argument("--steps", type=int, default=100, help="lr: training steps of the range test (default 100)")
    p.add_argument("--min-lr", type=float, default=1e-6, help="lr: first learning rate (default 1e-6)")
    p.add_argument("--max-lr", type=float, default=1.0, help="lr: last learning rate (default 1)")
    p.add_argument("--max-trials", type=int, default=12, help="batch: doublings tried at most (default 12)")
    p.set_defaults(fn=cmd_tune)

    p = sub.add_parser("check", help="validate a recipe and print every resolved field, without training",
                       description="Validate RECIPE with overrides (names, types, ranges, agreement between parts, the "
                                   "monitored metric) and build its model on the meta device with a dummy batch "
                                   "(feature levels, channels), without reading data or weights.")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", help=_OVERRIDES_HELP)
    p.set_defaults(fn=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted.path=value overrides written after options (zoo train R --out D a.b=1) join the others
    takes = "inputs" if args.command == "predict" else "overrides" if hasattr(args, "overrides") else None
    if extra and takes and all("=" in a and not a.startswith("-") for a in extra):
        setattr(args, takes, [*(getattr(args, takes) or []), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.fn(args)
    except ZooError as e:
        print(f"error: {e}", file=sys.stderr)
        for note in getattr(e, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written (under a file, /proc, a full disk): where and why
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e} (errno {e.errno})" if e.errno else f"error: {where}{e}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
