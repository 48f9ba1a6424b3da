"""Register the project's model names with mmpretrain's ``ModelHub``.

After ``import skd_bnn_mm``, ``mmpretrain.get_model(NAME)``,
``inference_model(NAME, img, pretrained=CKPT)`` and
``ImageClassificationInferencer(NAME, pretrained=CKPT)`` find every model of
``configs/skd_bnn/metafile.yml`` by name (no weights are published: pass
``pretrained``). The metafile and configs live in the source tree; an
installation without them registers nothing.
"""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
METAFILES = (osp.join(ROOT, 'configs', 'skd_bnn', 'metafile.yml'), )


def register_models(metafiles=METAFILES) -> list:
    """Register the models of ``metafiles`` (config paths relative to the
    repository root) once; returns the names registered by this call."""
    from mmpretrain.apis import ModelHub
    from modelindex.load_model_index import load
    added = []
    for path in metafiles:
        if not osp.isfile(path):
            continue
        names = [m.name.lower() for m in load(path).models]
        if any(ModelHub.has(name) for name in names):
            continue  # registered before (ModelHub refuses a second time)
        ModelHub.register_model_index(path, config_prefix=ROOT)
        added += names
    return added
