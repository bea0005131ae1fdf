"""COCO box evaluation time: ``zoo.detection_eval.coco_evaluate`` against plain pycocotools (and faster-coco-eval).

One generated ground-truth/results pair (``synthetic_coco_pair``: ``--images`` images, 0..5 boxes each, ~80 % found
with jitter, false positives) is written to JSON files; every side then starts from those files and ends with the
summary numbers, so file parsing, index building, evaluate, accumulate and summarize are all inside the time:

* ``plain pycocotools``: ``COCO(gt.json)``, ``loadRes(dt.json)``, ``COCOeval(...).evaluate/accumulate/summarize``;
* ``zoo (pycocotools)``: ``coco_evaluate_files(gt.json, dt.json)`` (the checks, renumbering and per-class AP added);
* ``plain faster-coco-eval`` and ``zoo (faster_coco_eval)`` the same way, if faster-coco-eval is installed.

Sides run in turn, their order rotated each repeat; the median of ``--repeats`` is reported, with ratios to plain
pycocotools, and a check that every side gives the same ``map``.

    flock /tmp/zoo-cpu.lock .venv/bin/python tools/bench_coco_eval.py --images 5000 --repeats 3

Records go in docs/detection_data.md ("Benchmarks"), then docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from zoo.detection_eval import coco_evaluate_files, synthetic_coco_pair


def plain(coco_cls: type, eval_cls: type, gt: Path, dt: Path) -> float:
    """The textbook run of a COCO library on files; returns mAP@[.5:.95]."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls(str(gt))
        evaluator = eval_cls(coco_gt, coco_gt.loadRes(str(dt)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def sides(gt: Path, dt: Path) -> dict[str, Callable[[], float]]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = {"plain pycocotools": lambda: plain(COCO, COCOeval, gt, dt),
           "zoo (pycocotools)": lambda: coco_evaluate_files(gt, dt).metrics["map"]}
    if importlib.util.find_spec("faster_coco_eval"):
        import faster_coco_eval

        out["plain faster-coco-eval"] = lambda: plain(faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster, gt, dt)
        out["zoo (faster_coco_eval)"] = lambda: coco_evaluate_files(gt, dt, backend="faster_coco_eval").metrics["map"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the generated set (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the median is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    gt_dict, dt_list = synthetic_coco_pair(args.images, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt, dt = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt.write_text(json.dumps(gt_dict))
        dt.write_text(json.dumps(dt_list))
        runs = sides(gt, dt)
        times: dict[str, list[float]] = {name: [] for name in runs}
        maps: dict[str, float] = {}
        names = list(runs)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[: repeat % len(names)]:
                start = time.perf_counter()
                maps[name] = runs[name]()
                times[name].append(time.perf_counter() - start)

    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}")
    print(f"set: {args.images} images, {len(gt_dict['annotations'])} boxes, {len(dt_list)} detections; "
          f"median of {args.repeats}")
    base = statistics.median(times["plain pycocotools"])
    rows = {}
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {"seconds": median, "ratio_to_plain_pycocotools": median / base, "map": maps[name]}
        print(f"  {name:<24} {median:7.2f} s   x{median / base:.2f}   map {maps[name]:.6f}")
    same = len({round(m, 12) for m in maps.values()}) == 1
    print("every side gives the same map" if same else "MISMATCH: the sides disagree on map")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": args.images, "repeats": args.repeats, "sides": rows},
                                              indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
