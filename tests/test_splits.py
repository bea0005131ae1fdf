"""``stratified_split``: exact per-class shares for every seed, coverage, determinism, the single-class path."""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from zoo.data.base import stratified_split

DISTRIBUTIONS = {
    "balanced": [100] * 10,
    "imbalanced_50_5": [50, 5],
    "many_classes": [3, 4, 7, 11, 30, 2, 1, 90, 5, 6] * 4,
    "digits_like": [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
}
FRACTIONS = [(0.1, 0.2), (0.1, 0.1), (0.0, 0.25), (0.3, 0.0)]


def _labels(counts):
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("val_fraction,test_fraction", FRACTIONS)
@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_every_class_holds_its_share_in_every_part_for_every_seed(name, val_fraction, test_fraction):
    labels = _labels(DISTRIBUTIONS[name])
    counts = np.bincount(labels)
    for seed in range(25):
        train, val, test = stratified_split(labels, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        together = np.concatenate([train, val, test])
        assert np.array_equal(np.sort(together), np.arange(len(labels))), "parts overlap or miss samples"
        for part, fraction in ((val, val_fraction), (test, test_fraction)):
            got = np.bincount(labels[part], minlength=len(counts))
            big = counts >= 3
            assert np.all(np.abs(got - counts * fraction)[big] <= 1), (name, seed, got.tolist())
            if fraction > 0:
                assert np.all(got[big] >= 1), f"{name} seed {seed}: a class of >= 3 samples is missing: {got}"
        train_counts = np.bincount(labels[train], minlength=len(counts))
        assert np.all(train_counts >= 1), "every class keeps a training sample"


def test_minority_of_a_50_5_set_is_in_val_and_test():
    labels = _labels([50, 5])
    for seed in range(50):
        _, val, test = stratified_split(labels, val_fraction=0.1, test_fraction=0.1, seed=seed)
        assert (labels[val] == 1).sum() == 1 and (labels[test] == 1).sum() == 1


def test_part_sizes_are_scikit_learns():
    labels = _labels(DISTRIBUTIONS["digits_like"])
    train, val, test = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (len(train), len(val), len(test)) == (1257, 180, 360)


def test_same_seed_same_split_other_seed_other_split():
    labels = _labels(DISTRIBUTIONS["many_classes"])
    a = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=3)
    c = stratified_split(labels, val_fraction=0.1, test_fraction=0.2, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("val_fraction,test_fraction", FRACTIONS)
def test_single_class_split_is_the_plain_seeded_split(val_fraction, test_fraction):
    """Detection and segmentation pass all-zero labels; their splits (and benchmarks) stay as they were."""
    index = np.arange(97)
    for seed in (0, 1, 7):
        got = stratified_split(np.zeros(97, np.int64), val_fraction=val_fraction, test_fraction=test_fraction,
                               seed=seed)
        rest, test = train_test_split(index, test_size=test_fraction, random_state=seed) \
            if test_fraction else (index, index[:0])
        if val_fraction:
            train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), random_state=seed)
        else:
            train, val = rest, rest[:0]
        assert np.array_equal(np.sort(got[0]), np.sort(train)) and np.array_equal(got[1], np.sort(val))
        assert np.array_equal(got[2], np.sort(test))
