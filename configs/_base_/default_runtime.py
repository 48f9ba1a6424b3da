# Runtime shared by every config of the plugin: mmpretrain's runtime, plus
# the plugin import (registers its modules into mmpretrain's registries).
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['skd_bnn_mm'], allow_failed_imports=False)

# Strict, explained resume (see skd_bnn_mm.engine.runner.SafeRunner); also
# registered in mmengine's root registry, so mmpretrain's tools/train.py and
# tools/test.py build it.
runner_type = 'SafeRunner'

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    # keep the last 3 epoch checkpoints and the best one by top-1; old files
    # are removed only after the new one is written
    checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
    # stop at the first NaN/inf or exploding loss, before it is saved
    finite_loss=dict(type='FiniteLossHook', max_loss=1e5),
    # several processes: average BN statistics so that validation and the
    # checkpoint see the same model, and check every process agrees
    rank_consistency=dict(type='RankConsistencyHook'),
    # EDEHook / SoftLabelBankHook present once when the model needs them
    setup_check=dict(type='SetupCheckHook'),
    # stop at the first iteration if a binary conv only ever sees inputs >= 0
    # (e.g. right after a ReLU): every binary activation would be +1
    binary_input_check=dict(type='BinaryInputCheckHook'),
)

# tools/train.py switches nccl to gloo on machines without CUDA.
env_cfg = dict(dist_cfg=dict(backend='nccl'))

log_processor = dict(by_epoch=True)

# mmpretrain's visualizer, re-declared: inheriting it through `mmpretrain::`
# adds a `_scope_` key, which mmpretrain's browse_dataset.py passes on to the
# visualizer as a keyword argument (TypeError).
visualizer = dict(_delete_=True, type='UniversalVisualizer',
                  vis_backends=[dict(type='LocalVisBackend')])
