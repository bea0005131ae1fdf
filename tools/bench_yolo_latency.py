"""Detect + decode + NMS latency per image: the zoo's nano modern YOLO head against Ultralytics YOLO11n.

Both models are built without weights (ours from the registry, YOLO11n from ``yolo11n.yaml``) for the same number
of classes (80, YOLO11n's default) and run on the same random ``--size`` x ``--size`` images, batch 1, in eval mode
under ``torch.inference_mode``. One timed call is the whole way from an input tensor to final boxes:

* zoo: backbone → ``Yolo`` neck/head → ``heads.detection.decode_detections`` (score threshold, ``batched_nms``);
* Ultralytics: ``DetectionModel`` forward → ``ultralytics.utils.nms.non_max_suppression``;

with the same thresholds (score 0.25, IoU 0.45, 100 detections). The two run in turn, in rotated order, and the
median of ``--repeats`` calls is reported with the ratio. FLOPs of one forward pass come from
``torch.utils.flop_counter`` (multiply-adds count 2; the same counter for both). Untrained heads keep few boxes
above 0.25, so NMS is a small part of either time.

Ultralytics is not a dependency of the zoo: ``pip install ultralytics`` (``--no-deps`` keeps the installed OpenCV);
``YOLO_OFFLINE=1`` is set so it never reaches the network.

    flock /tmp/zoo-cpu.lock .venv/bin/python tools/bench_yolo_latency.py --size 640 --repeats 30
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from heads import Yolo
from heads.detection import decode_detections
from zoo.recipe import BackboneSpec

OPTIONS = {"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100}


def zoo_detector(backbone: str, size: str, num_classes: int) -> Callable[[torch.Tensor], list]:
    net = BackboneSpec(name=backbone).build()
    model = torch.nn.Sequential(net, Yolo(size=size).build(net.feature_info, num_classes=num_classes)).eval()
    return model, lambda x: decode_detections(model(x), **OPTIONS)


def ultralytics_detector(num_classes: int) -> Callable[[torch.Tensor], list]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO
    from ultralytics.utils.nms import non_max_suppression

    model = YOLO("yolo11n.yaml").model.eval()
    assert model.yaml["nc"] == num_classes, model.yaml["nc"]

    def run(x: torch.Tensor) -> list:
        out = model(x)
        out = out[0] if isinstance(out, (list, tuple)) else out  # eval mode: (decoded [N, 4 + C, A], raw levels)
        return non_max_suppression(out, conf_thres=OPTIONS["score_threshold"], iou_thres=OPTIONS["iou_threshold"],
                                   max_det=OPTIONS["max_detections"])

    return model, run


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=640, help="input side in pixels (default 640)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per model (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model first (default 5)")
    parser.add_argument("--backbone", default="resnet10t", help="backbone of the zoo model (default resnet10t, "
                                                                 "the shapes recipe's)")
    parser.add_argument("--head-size", default="nano", help="size of the zoo head (default nano)")
    parser.add_argument("--classes", type=int, default=80, help="classes of both models (default 80)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    models = {"zoo": zoo_detector(args.backbone, args.head_size, args.classes)}
    try:
        models["ultralytics YOLO11n"] = ultralytics_detector(args.classes)
    except ImportError as error:
        print(f"ultralytics is not installed ({error}); `pip install ultralytics` to compare", file=sys.stderr)
    x = torch.rand(1, 3, args.size, args.size)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        flops = {name: forward_flops(model, x) for name, (model, _) in models.items()}
        for name, (_, run) in models.items():
            for _ in range(args.warmup):
                run(x)
        names = list(models)
        for i in range(args.repeats):
            for name in names[i % len(names):] + names[:i % len(names)]:
                start = time.perf_counter()
                models[name][1](x)
                times[name].append(time.perf_counter() - start)

    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; input {args.size}x{args.size}, batch 1, {args.classes} classes")
    base = statistics.median(times[names[-1]])
    for name in names:
        median = statistics.median(times[name])
        params = sum(p.numel() for p in models[name][0].parameters())
        print(f"{name:22s} {median * 1e3:8.1f} ms/image  {flops[name] / 1e9:6.2f} GFLOPs  {params / 1e6:5.2f} M params"
              f"  ratio to {names[-1]}: {median / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
