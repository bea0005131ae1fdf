"""``zoo export``: for one shipped recipe of every kind of head (generated from recipes/), ONNX Runtime and the
TorchScript file give what the same graph gives in eager PyTorch; the graph agrees with ``zoo predict``; metadata
travels with the file; what cannot be exported is refused, leaving no file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_shipped_recipes import RECIPES, TINY
from zoo.cli import main
from zoo.engine.module import ZooModule
from zoo.errors import ZooError
from zoo.export import ExportGraph, export_module
from zoo.inference import Model
from zoo.recipe import load_recipe
from zoo.recipe.parts import ModelSpec

ort = pytest.importorskip("onnxruntime")
ONNX_REFUSED = {"Autoencoder", "Vae"}  # adaptive pooling to a size the legacy ONNX exporter cannot express
MAX_ABS = {"boxes": 1e-3, "box": 1e-3}  # pixels; everything else (logits, probs, masks, scores): 1e-4


def _heads(recipe) -> tuple[str, ...]:
    return tuple(sorted(type(spec).__name__ for spec, _ in recipe.heads().values()))


def _one_recipe_per_head_kind() -> list[Path]:
    """For each combination of head specs, one shipped recipe: on embedded data (no user files) where there is one,
    then the smallest input."""
    chosen: dict[tuple[str, ...], tuple[tuple[bool, int], Path]] = {}
    for path in RECIPES:
        recipe = load_recipe(path, TINY.get(path.stem, []))
        rank = (hasattr(recipe.data, "root") or hasattr(recipe.data, "train_json"), recipe.data.image_size)
        key = _heads(recipe)
        if key not in chosen or rank < chosen[key][0]:
            chosen[key] = (rank, path)
    return sorted(path for _, path in chosen.values())


KINDS = _one_recipe_per_head_kind()


def _module(path: Path) -> ZooModule:
    """The recipe's model with seeded random weights (parity does not need training) and placeholder classes where
    only the data knows them. An untrained detector's scores all sit near its prior (0.01), a few 1e-7 apart, where
    the order of near-ties (and so what NMS keeps) is a matter of rounding: its head's weights are spread, and its
    ``score_threshold`` goes between two scores so that the best 3 % (well apart) are candidates."""
    recipe = load_recipe(path, TINY.get(path.stem, []) + ["model.backbone.pretrained=False", "model.weights=None"])
    known = recipe.data.target_classes()
    classes = {key: known.get(key) or tuple(f"c{i}" for i in range(4)) for key in recipe.target_keys()}
    torch.manual_seed(0)
    module = ZooModule(recipe, classes).eval()
    with torch.no_grad():
        for name, ctx in module.contexts.items():
            if hasattr(ctx.spec, "score_threshold"):  # spread an untrained detector's scores (all near its prior)
                for p in ctx.module.parameters():
                    p.add_(torch.randn_like(p) * 0.1)
        outputs = ExportGraph(module).model(torch.randn(3, recipe.data.channels, recipe.data.image_size,
                                                        recipe.data.image_size))
    for name, ctx in module.contexts.items():
        if not hasattr(ctx.spec, "score_threshold"):
            continue
        scores = np.sort((outputs if module.model.single else outputs[name])["scores"].flatten().numpy())
        cut = int(len(scores) * 0.97)
        threshold = float(scores[cut - 1] + scores[cut]) / 2
        module.contexts[name] = dataclasses.replace(
            ctx, spec=dataclasses.replace(ctx.spec, score_threshold=threshold, max_detections=30))
    return module


def _match_boxes(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], prefix: str) -> None:
    """Puts ``actual``'s kept boxes of a detection head in ``expected``'s order: the one-to-one pairing of boxes of
    the same image and class that moves them least (boxes clipped to the input can coincide, so no sort order is
    unique); the value checks that follow then see identical kept-box sets or fail."""
    from scipy.optimize import linear_sum_assignment

    keys = [f"{prefix}{k}" for k in ("batch_index", "labels", "scores", "boxes")]
    (eb, el, es, ebox), (ab, al, as_, abox) = ([d[k] for k in keys] for d in (expected, actual))
    assert len(eb) == len(ab), f"{prefix}boxes: {len(eb)} kept in eager PyTorch, {len(ab)} exported"
    distance = np.maximum(np.abs(ebox[:, None] - abox[None]).max(-1), np.abs(es[:, None] - as_[None]) * 10)
    distance[(eb[:, None] != ab[None]) | (el[:, None] != al[None])] = 1e9
    rows, pairs = linear_sum_assignment(distance)
    for k in keys:
        actual[k] = actual[k][pairs]


def assert_parity(names: list[str], eager: tuple[torch.Tensor, ...], got: list[np.ndarray]) -> None:
    expected = {n: t.detach().numpy() for n, t in zip(names, eager)}
    actual = {n: np.asarray(a) for n, a in zip(names, got)}
    for name in names:
        if name.endswith("batch_index"):
            _match_boxes(expected, actual, name[: -len("batch_index")])
    for name in names:
        a, b = expected[name], actual[name]
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if a.dtype.kind in "iub":  # labels, image indices, masks, caption tokens: identical
            assert np.array_equal(a, b), name
        elif a.size:
            assert np.abs(a - b).max() <= MAX_ABS.get(name.rsplit("/", 1)[-1], 1e-4), name
        if name.endswith("probs") and a.ndim == 2:
            assert np.array_equal(a.argmax(1), b.argmax(1)), f"{name}: top-1 differs"


@pytest.mark.parametrize("path", KINDS, ids=lambda p: p.stem)
def test_onnx_and_torchscript_match_eager_pytorch(path, tmp_path):
    module = _module(path)
    graph = ExportGraph(module).eval()
    images = graph.example(3)  # another batch size than the one traced: --dynamic-batch works
    with torch.no_grad():
        eager = graph(images)

    traced_file, info = export_module(module, tmp_path / "m.pt", fmt="torchscript", dynamic_batch=True, batch=2)
    assert_parity(info["outputs"], eager, [t.detach().numpy() for t in torch.jit.load(str(traced_file))(images)])

    if set(_heads(module.recipe)) & ONNX_REFUSED:
        with pytest.raises(ZooError, match="cannot export the .* to onnx"):
            export_module(module, tmp_path / "m.onnx", fmt="onnx", dynamic_batch=True, batch=2)
        assert not (tmp_path / "m.onnx").exists()  # refused: no broken file left behind
        return
    onnx_file, info = export_module(module, tmp_path / "m.onnx", fmt="onnx", dynamic_batch=True, batch=2)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == info["outputs"]
    assert_parity(info["outputs"], eager, session.run(None, {"images": images.numpy()}))
    if any(n.endswith("batch_index") for n in info["outputs"]):
        assert len(eager[info["outputs"].index(next(n for n in info["outputs"] if n.endswith("scores")))]), \
            "no box kept: the detection parity checked nothing"


def test_the_detection_graph_keeps_the_boxes_zoo_predict_keeps():
    module = _module(Path("recipes/detect_shapes_yolo.py"))
    graph = ExportGraph(module).eval()
    images = graph.example(2)
    with torch.no_grad():
        out = dict(zip(graph.output_names, graph(images)))
    predicted = Model(module, device=torch.device("cpu")).predict(images.permute(0, 2, 3, 1).numpy())
    found = [{"batch_index": i, "labels": d["index"], "scores": d["score"], "boxes": d["box"]}
             for i, prediction in enumerate(predicted) for d in prediction["detections"]]
    expected = {k: v.numpy() for k, v in out.items()}
    actual = {k: np.array([f[k] for f in found], dtype=expected[k].dtype).reshape(-1, *expected[k].shape[1:])
              for k in expected}
    assert len(found) and set(actual["batch_index"].tolist()) == {0, 1}
    _match_boxes(expected, actual, "")
    assert np.array_equal(expected["labels"], actual["labels"])
    assert np.abs(expected["boxes"] - actual["boxes"]).max() <= 0.011  # zoo predict rounds boxes to 0.01 px
    assert np.abs(expected["scores"] - actual["scores"]).max() <= 1e-5  # and scores to 1e-5


def test_zoo_export_cli_writes_metadata_and_agrees_with_zoo_load(trained_checkpoint, tmp_path, capsys):
    import onnx

    import zoo

    out = tmp_path / "digits.onnx"
    assert main(["export", str(trained_checkpoint), "--format", "onnx", "--out", str(out), "--dynamic-batch"]) == 0
    assert "wrote" in capsys.readouterr().out
    info = json.loads(Path(f"{out}.json").read_text())
    inside = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(inside["zoo"]) == info
    assert info["tasks"] == {"": "classification"} and info["heads"][""]["classes"] == [str(d) for d in range(10)]
    assert info["input"] | {} == {**info["input"], "dtype": "uint8", "size": 32, "channels": 1, "resize": "stretch",
                                  "shape": ["N", 1, 32, 32]}
    assert info["input"]["mean"] and info["input"]["std"] and info["zoo_version"]

    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (4, 32, 32, 1), dtype=np.uint8)  # at the input size: no resizing involved
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    probs = session.run(["probs"], {"images": pictures.transpose(0, 3, 1, 2)})[0]
    predicted = zoo.load(trained_checkpoint, device="cpu").predict(pictures)
    assert probs.argmax(1).tolist() == [p["top_k"][0]["index"] for p in predicted]
    assert np.abs(probs.max(1) - [p["top_k"][0]["prob"] for p in predicted]).max() < 1e-4

    assert main(["export", str(trained_checkpoint), "--format", "torchscript", "--out", str(tmp_path / "d.pt")]) == 0
    extra = {"zoo.json": ""}
    torch.jit.load(str(tmp_path / "d.pt"), _extra_files=extra)
    assert json.loads(extra["zoo.json"])["format"] == "torchscript"


def test_a_task_without_an_export_hook_is_refused_naming_the_head(trained_checkpoint, tmp_path, monkeypatch, capsys):
    from heads.classification import CLASSIFICATION, Classifier, CrossEntropy

    unexportable = dataclasses.replace(CLASSIFICATION, export=None)
    monkeypatch.setattr(Classifier, "task", unexportable)
    monkeypatch.setattr(CrossEntropy, "task", unexportable)
    assert main(["export", str(trained_checkpoint), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model.head: the classification task (Classifier) cannot be exported" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def _run_without_torch(*args: str) -> list[dict]:
    """tools/onnx_predict.py in a fresh interpreter in which importing torch or zoo fails."""
    import subprocess
    import sys

    code = ("import sys, runpy; sys.modules.update(torch=None, zoo=None, heads=None); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, "tools/onnx_predict.py", *args], capture_output=True,
                          text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_standalone_example_runs_a_classifier_and_a_detector_without_torch(trained_checkpoint, tmp_path):
    import zoo
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "digit.png")
    assert main(["export", str(trained_checkpoint), "--out", str(tmp_path / "c.onnx")]) == 0
    (shown,) = _run_without_torch(str(tmp_path / "c.onnx"), str(tmp_path / "digit.png"))
    expected = zoo.load(trained_checkpoint, device="cpu").predict(tmp_path / "digit.png")
    assert shown["top_k"][0]["index"] == expected["top_k"][0]["index"]
    assert abs(shown["top_k"][0]["prob"] - expected["top_k"][0]["prob"]) < 1e-4

    module = _module(Path("recipes/detect_shapes_yolo.py"))
    export_module(module, tmp_path / "d.onnx")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "shapes.png")
    (shown,) = _run_without_torch(str(tmp_path / "d.onnx"), str(tmp_path / "shapes.png"))
    expected = Model(module, device=torch.device("cpu")).predict(tmp_path / "shapes.png")
    assert len(shown["detections"]) == len(expected["detections"]) > 0
    for a, b in zip(sorted(shown["detections"], key=lambda d: d["box"]),
                    sorted(expected["detections"], key=lambda d: d["box"])):
        assert a["index"] == b["index"] and np.abs(np.subtract(a["box"], b["box"])).max() <= 0.011
