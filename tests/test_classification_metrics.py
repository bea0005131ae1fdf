"""Per-class accuracy: a class absent from the evaluated targets is reported absent, not as accuracy 0.0."""

import torch

from heads.classification import ClassificationMetrics


def test_absent_class_has_no_accuracy_and_a_missed_class_has_zero():
    metrics = ClassificationMetrics(["a", "b", "c"])
    logits = torch.tensor([[5.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0]])  # always predicts "a"
    metrics.update(logits, torch.tensor([0, 0, 1]))  # "c" never occurs; "b" occurs and is always missed
    result = metrics.compute()
    assert "acc/c" not in result
    assert result["acc/a"] == 1.0 and result["acc/b"] == 0.0
    assert abs(result["top1"] - 2 / 3) < 1e-6
