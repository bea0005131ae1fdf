"""Run a model exported by `zoo export --format onnx` with onnxruntime, numpy and Pillow only (no torch, no zoo).

    python tools/onnx_predict.py runs/demo/best.onnx photo.jpg other.png

Prints one JSON object per image: a classifier's top-5, a detector's boxes in the image's own pixels, a segmenter's
class shares, a captioner's caption, an autoencoder's reconstruction error. Everything it needs (input size,
channels, resize mode, class names, output names) comes from the "zoo" metadata inside the ONNX file; the
normalisation is inside the graph. This file is a deployment example, so it repeats on purpose the two small steps a
deployment repeats: fitting the image to the input (stretch or letterbox) and mapping boxes back.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def fit(image: Image.Image, size: int, resize: str) -> tuple[Image.Image, float, int, int]:
    """The image at ``size`` x ``size``, with (scale, left pad, top pad) to map boxes back."""
    if resize == "letterbox":  # longest side to size, centred on black
        scale = size / max(image.size)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        canvas = Image.new(image.mode, (size, size))
        left, top = (size - w) // 2, (size - h) // 2
        canvas.paste(image.resize((w, h), Image.BILINEAR), (left, top))
        return canvas, scale, left, top
    return image.resize((size, size), Image.BILINEAR), 0.0, 0, 0


def to_original(box: np.ndarray, image: Image.Image, size: int, scale: float, left: int, top: int) -> list[float]:
    x1, y1, x2, y2 = box.tolist()
    if scale:  # letterbox
        x1, x2, y1, y2 = (x1 - left) / scale, (x2 - left) / scale, (y1 - top) / scale, (y2 - top) / scale
    else:
        sx, sy = image.width / size, image.height / size
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
    clip = lambda v, hi: round(min(max(v, 0.0), hi), 2)  # noqa: E731
    return [clip(x1, image.width), clip(y1, image.height), clip(x2, image.width), clip(y2, image.height)]


def describe(head: dict, outputs: dict[str, np.ndarray], prefix: str, fitted: tuple) -> dict:
    """One head's outputs for the first (only) image of the batch, by task."""
    classes, task = head["classes"], head["task"]
    out = {k[len(prefix):]: v for k, v in outputs.items() if k.startswith(prefix)}
    if task in ("classification", "localization"):
        probs = out["probs"][0]
        best = np.argsort(-probs)[:5]
        result = {"top_k": [{"class": classes[i], "index": int(i), "prob": round(float(probs[i]), 6)} for i in best]}
        if "box" in out:
            result["box"] = to_original(out["box"][0], *fitted)
        return result
    if task == "detection":
        mine = out["batch_index"] == 0
        return {"detections": [{"class": classes[k], "index": int(k), "score": round(float(s), 5),
                                "box": to_original(b, *fitted)}
                               for b, s, k in zip(out["boxes"][mine], out["scores"][mine], out["labels"][mine])]}
    if task == "segmentation":
        counts = np.bincount(out["mask"][0].ravel(), minlength=len(classes))
        return {"class_share": {classes[i]: round(c / counts.sum(), 6) for i, c in enumerate(counts) if c}}
    if task == "captioning":
        words = []
        for t in out["tokens"][0].tolist():
            if classes[t] == "<eos>":
                break
            if classes[t] not in ("<pad>", "<bos>"):
                words.append(classes[t])
        return {"caption": " ".join(words)}
    return {name: list(value.shape) for name, value in out.items()}  # reconstructions: their shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file written by zoo export")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["zoo"])
    spec = meta["input"]
    size, dtype = spec["size"], np.uint8 if spec["dtype"] == "uint8" else np.float32
    for path in args.images:
        image = ImageOps.exif_transpose(Image.open(path)).convert("L" if spec["channels"] == 1 else "RGB")
        fitted_image, *placement = fit(image, size, spec["resize"])
        pixels = np.asarray(fitted_image, dtype=np.float32).reshape(size, size, spec["channels"])
        batch = pixels.transpose(2, 0, 1)[None]
        batch = batch.astype(np.uint8) if dtype == np.uint8 else batch / 255.0
        outputs = dict(zip(meta["outputs"], session.run(None, {spec["name"]: batch.astype(dtype)})))
        fitted = (image, size, *placement)
        heads = meta["heads"]
        result = {"image": path}
        if list(heads) == [""]:
            result.update(describe(heads[""], outputs, "", fitted))
        else:
            result.update({name: describe(head, outputs, f"{name}/", fitted) for name, head in heads.items()})
        print(json.dumps(result))


if __name__ == "__main__":
    main()
