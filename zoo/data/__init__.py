"""Dataset adapters (each a ``@spec`` with ``setup() -> DataSplits``) and image decoding."""

from zoo.data.base import DataSplits, ImageData, TransformedDataset
from zoo.data.captions import CocoCaptionData, ShapesCaptionData
from zoo.data.detection import CocoDetectionData, ShapesDetectionData, VocData, YoloFolderData
from zoo.data.digits import DigitsData
from zoo.data.folder import ImageFolderData
from zoo.data.images import ImageDecodeError, load_image
from zoo.data.multi import MultiData, ShapesMultiTaskData
from zoo.data.segmentation import CocoSegmentationData, MaskFolderData, ShapesSegmentationData
from zoo.data.shapes_data import ShapesData

__all__ = ["CocoCaptionData", "ShapesCaptionData", "DataSplits", "ImageData", "TransformedDataset", "DigitsData",
           "ImageFolderData", "ShapesData", "CocoDetectionData", "ShapesDetectionData", "VocData", "YoloFolderData",
           "ImageDecodeError", "load_image", "MaskFolderData", "ShapesSegmentationData", "CocoSegmentationData",
           "MultiData", "ShapesMultiTaskData"]
