# Runtime shared by every config of the plugin: mmpretrain's runtime, plus
# the plugin import (registers its modules into mmpretrain's registries).
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['skd_bnn_mm'], allow_failed_imports=False)

# Strict, explained resume (see skd_bnn_mm.engine.runner.SafeRunner).
runner_type = 'SafeRunner'

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    # keep the last 3 epoch checkpoints and the best one by top-1
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                    save_best='auto'),
)

# tools/train.py switches nccl to gloo on machines without CUDA.
env_cfg = dict(dist_cfg=dict(backend='nccl'))

log_processor = dict(by_epoch=True)
