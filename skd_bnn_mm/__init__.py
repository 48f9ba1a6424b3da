"""skd_bnn_mm: binary neural networks with SKD-BNN for mmengine / mmpretrain.

Importing the package registers every module into mmpretrain's registries
(``MODELS``, ``HOOKS``, ``DATASETS``, ``PARAM_SCHEDULERS``, ``TRANSFORMS``),
so configs keep ``default_scope='mmpretrain'`` and load the plugin with
``custom_imports=dict(imports=['skd_bnn_mm'], allow_failed_imports=False)``.
It also registers the model names of ``configs/skd_bnn/metafile.yml`` with
mmpretrain's ``ModelHub`` (``get_model``, ``inference_model``).
"""
from .version import __version__
from . import utils  # noqa: F401  (safe checkpoint loader, registered first)
from . import datasets, engine, models  # noqa: F401,E402
from .model_index import register_models  # noqa: E402

# model names of configs/skd_bnn/metafile.yml for mmpretrain.get_model /
# inference_model (source tree only)
register_models()

__all__ = ['__version__']
