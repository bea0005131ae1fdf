"""Task plug-ins: each module defines a ``Task`` and the head and loss specs that point to it."""

from heads.autoencoder import AUTOENCODING, Autoencoder, ReconstructionLoss
from heads.captioning import CAPTIONING, CaptionCrossEntropy, LstmCaptioner, TransformerCaptioner
from heads.classification import CLASSIFICATION, Classifier, ClassifierHead, CrossEntropy
from heads.detection import DETECTION, YoloV1, YoloV1Loss
from heads.localization import LOCALIZATION, LocalizationLoss, Localizer
from heads.segmentation import FCN, SEGMENTATION, SegmentationLoss, UNet
from heads.vae import VAE, Vae, VaeLoss
from heads.yolo import Yolo, YoloLoss

__all__ = ["AUTOENCODING", "Autoencoder", "ReconstructionLoss", "VAE", "Vae", "VaeLoss",
           "CAPTIONING", "CaptionCrossEntropy", "LstmCaptioner", "TransformerCaptioner", "CLASSIFICATION", "Classifier",
           "ClassifierHead", "CrossEntropy", "DETECTION", "YoloV1", "YoloV1Loss", "Yolo", "YoloLoss",
           "LOCALIZATION", "Localizer", "LocalizationLoss", "FCN", "SEGMENTATION", "SegmentationLoss", "UNet"]
