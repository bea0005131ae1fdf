"""zoo.curves: every logged scalar read back from a run's CSV logs (resumed parts included) and drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zoo.curves import head_names, panels, read_scalars, write_curves


def _write(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


HEADER = "epoch,lr/head,step,train/loss,val/loss,val/top1,val/acc/a"


def test_steps_become_fractional_epochs_and_val_metrics_sit_at_epoch_ends(tmp_path):
    # 4 steps per epoch, train/loss every 2 steps, validation once per epoch, lr rows without an epoch
    _write(tmp_path / "logs" / "metrics.csv", HEADER, [
        ",0.1,0,,,,", "0,,1,2.0,,,", "0,,3,1.0,,,", "0,,3,,0.9,0.5,0.4",
        ",0.05,4,,,,", "1,,5,0.5,,,", "1,,7,0.25,,,", "1,,7,,0.6,0.8,0.7",
    ])
    s = read_scalars(tmp_path)
    np.testing.assert_allclose(s["train/loss"].epoch, [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(s["train/loss"].value, [2.0, 1.0, 0.5, 0.25])
    np.testing.assert_allclose(s["val/top1"].epoch, [1, 2])
    np.testing.assert_allclose(s["lr/head"].epoch, [0.25, 1.25])
    assert s["val/top1"].per_epoch and not s["train/loss"].per_epoch
    groups = {k: [x.name for x in v] for k, v in panels(s).items()}
    assert groups == {"loss": ["train/loss", "val/loss"], "metrics": ["val/top1"],
                      "per-class metrics": ["val/acc/a"], "learning rate": ["lr/head"]}


def test_a_resumed_part_replaces_what_the_interrupted_run_logged_after_its_checkpoint(tmp_path):
    _write(tmp_path / "logs" / "metrics.csv", HEADER, [
        "0,,1,2.0,,,", "0,,3,1.0,,,", "0,,3,,0.9,0.5,0.4", "1,,5,9.0,,,"])  # step 5 was trained again
    _write(tmp_path / "logs" / "resumed_1" / "metrics.csv", HEADER, [
        "1,,5,0.5,,,", "1,,7,0.25,,,", "1,,7,,0.6,0.8,0.7"])
    s = read_scalars(tmp_path)
    np.testing.assert_allclose(s["train/loss"].value, [2.0, 1.0, 0.5, 0.25])
    np.testing.assert_allclose(s["val/top1"].value, [0.5, 0.8])


def test_named_heads_get_their_own_pictures_and_unmeasured_metrics_are_left_out(tmp_path):
    header = "epoch,step,train/loss,train/det/box,train/seg/ce,val/det/map50,val/det/map_large,val/seg/miou,val/det/ap/red"
    _write(tmp_path / "logs" / "metrics.csv", header, [
        "0,1,3.0,1.0,2.0,,,,", "0,1,,,,0.3,-1,0.4,0.2", "1,3,2.0,0.5,1.5,,,,", "1,3,,,,0.5,-1,0.6,0.4"])
    s = read_scalars(tmp_path)
    assert head_names(s) == ["det", "seg"]
    det = {k: [x.name for x in v] for k, v in panels(s, "det").items()}
    assert det == {"loss": ["train/det/box"], "metrics": ["val/det/map50"], "per-class metrics": ["val/det/ap/red"]}
    written = write_curves(tmp_path)
    assert [p.name for p in written] == ["curves.png", "curves_det.png", "curves_seg.png"]
    assert all(Image.open(p).size[0] > 100 for p in written)


def test_a_run_that_logged_nothing_yet_writes_no_picture(tmp_path):
    assert read_scalars(tmp_path) == {}
    assert write_curves(tmp_path) == []
