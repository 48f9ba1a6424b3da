"""Check, before a run, that a dataset's labels fit the model's classes."""
from typing import Optional


def model_num_classes(model) -> Optional[int]:
    """``num_classes`` of a classifier's head (``None`` if it has none)."""
    while hasattr(model, 'module'):  # DDP / TTA wrappers
        model = model.module
    head = getattr(model, 'head', None)
    value = getattr(head, 'num_classes', None)
    return value if isinstance(value, int) else None


def check_labels_fit(dataset, num_classes: Optional[int],
                     where: str = 'model.head.num_classes') -> None:
    """Raise ``ValueError`` when ``dataset`` has labels ``>= num_classes``.

    Without this a smaller ``num_classes`` fails inside the loss or the
    accuracy with a bare ``IndexError`` (or, on CUDA, a device assert).
    Reads the labels only (``get_gt_labels``), not the images.
    """
    if num_classes is None:
        return
    while hasattr(dataset, 'dataset'):  # dataset wrappers
        dataset = dataset.dataset
    getter = getattr(dataset, 'get_gt_labels', None)
    if getter is None:
        return
    labels = getter()
    if len(labels) == 0:
        return
    top = int(max(labels))
    if top >= num_classes:
        classes = len(dataset.metainfo.get('classes') or ()) or top + 1
        raise ValueError(
            f'{where}={num_classes}, but {type(dataset).__name__} has labels '
            f'up to {top} ({classes} classes): set {where}={classes} (and '
            f'data_preprocessor.num_classes={classes}), or use a dataset '
            f'with {num_classes} classes.')
