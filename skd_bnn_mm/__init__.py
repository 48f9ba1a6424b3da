"""skd_bnn_mm: binary neural networks with SKD-BNN for mmengine / mmpretrain.

Importing the package registers every module into mmpretrain's registries
(``MODELS``, ``HOOKS``, ``DATASETS``, ``PARAM_SCHEDULERS``, ``TRANSFORMS``),
so configs keep ``default_scope='mmpretrain'`` and load the plugin with
``custom_imports=dict(imports=['skd_bnn_mm'], allow_failed_imports=False)``.
"""
from .version import __version__
from . import utils  # noqa: F401  (safe checkpoint loader, registered first)
from . import datasets, engine, models  # noqa: F401,E402

__all__ = ['__version__']
