"""Task plug-ins: each module defines a ``Task`` and the head and loss specs that point to it."""

from heads.classification import CLASSIFICATION, Classifier, ClassifierHead, CrossEntropy

__all__ = ["CLASSIFICATION", "Classifier", "ClassifierHead", "CrossEntropy"]
