from .skd_image_classifier import SKDImageClassifier

__all__ = ['SKDImageClassifier']
