"""Dense tasks (segmentation, detection): scene data, transfer models, metrics. App layer."""

# Register the built-in dense datasets first, in a fixed order (scenes, VOC, then the coco: pattern),
# whichever dense module is imported first.
from . import datasets as _datasets  # noqa: F401
