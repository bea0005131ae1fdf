"""tools/plot_curves.py on fabricated Lightning CSVLogger files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.plot_curves import main, read_run

HEADER = "epoch,lr-SGD/pg1,step,train/loss,val/loss,val/top1,val/top5\n"


def _run(root: Path, name: str, losses: list[float], tops: list[float], *, steps_per_epoch: int = 4,
         every: int = 2) -> Path:
    """A run folder as ``zoo train`` leaves it: train/loss every ``every`` steps, val metrics once per epoch,
    learning-rate rows with an empty epoch, all other cells empty."""
    lines = [HEADER, ",0.1,0,,,,\n"]
    losses = iter(losses)
    for epoch, top in enumerate(tops):
        for s in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch):
            if (s + 1) % every == 0:
                lines.append(f"{epoch},,{s},{next(losses)},,,\n")
        last = (epoch + 1) * steps_per_epoch - 1
        lines.append(f"{epoch},,{last},,0.5,{top},1.0\n")
        lines.append(f",0.05,{last + 1},,,,\n")
    (root / name / "logs").mkdir(parents=True)
    (root / name / "logs" / "metrics.csv").write_text("".join(lines))
    return root / name


def test_reads_losses_at_fractional_epochs_and_errors_per_epoch(tmp_path):
    run = _run(tmp_path, "a", [2.0, 1.0, 0.5, 0.25], [0.6, 0.9])
    c = read_run(run)
    assert c.name == "a"
    np.testing.assert_allclose(c.train_epoch, [0.5, 1.0, 1.5, 2.0])  # steps 2, 4, 6, 8 of 4 per epoch
    np.testing.assert_allclose(c.train, [2.0, 1.0, 0.5, 0.25])
    np.testing.assert_allclose(c.val_epoch, [1, 2])
    np.testing.assert_allclose(c.val_error, [0.4, 0.1])
    assert c.last_epoch_train() == pytest.approx(0.375)  # the two points of epoch 2


def test_other_metric_and_missing_columns_are_named(tmp_path):
    run = _run(tmp_path, "a", [2.0, 1.0], [0.6])
    assert read_run(run, val_metric="val/top5").val_error.tolist() == [0.0]
    with pytest.raises(SystemExit, match="no column 'train/ce'.*'train/loss'"):
        read_run(run, metric="train/ce")
    with pytest.raises(SystemExit, match="no such file"):
        read_run(tmp_path / "nothing")


def test_main_plots_all_runs_and_prints_a_summary(tmp_path, capsys):
    a = _run(tmp_path, "plain", [2.0, 1.5, 1.2, 1.1], [0.5, 0.6])
    b = _run(tmp_path, "resnet", [2.0, 1.0, 0.3, 0.1], [0.7, 0.95])
    out = tmp_path / "img" / "curves.png"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    printed = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in printed[1:3]}
    assert rows["plain"] == pytest.approx([1.15, 0.4, 0.4])
    assert rows["resnet"] == pytest.approx([0.2, 0.05, 0.05])
