"""Dense tasks (segmentation, detection): scene data, transfer models, metrics. App layer."""
