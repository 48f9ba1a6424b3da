# CIFAR-10, batch 128, the paper's augmentation: pad 4 with EDGE replication,
# random 32x32 crop, horizontal flip; normalise with the paper's mean/std.
# Test images are used as they are.
#
# PaddedRandomCrop is mmpretrain's RandomCrop with padding_mode honoured
# (RandomCrop(padding=4, padding_mode='edge') would pad with zeros: its
# padding_mode only applies to pad_if_needed); it and RandomFlip draw from
# numpy's generator as mmpretrain's transforms do, so EpochSeedHook seeds them.
# Batches are stacked (default_collate): one host-to-device copy and one
# normalisation per batch.
#
# Data: the official python-pickle layout in $CIFAR10_ROOT (default
# data/cifar10, downloaded there when absent). A copy whose files differ from
# the official archive (e.g. the bundled JPEG-decoded copy) needs
# verify_md5=False: set CIFAR10_VERIFY_MD5=False in the environment, or pass
# --cfg-options {train,val,test}_dataloader.dataset.verify_md5=False.
dataset_type = 'CIFAR10Pickle'
data_root = '{{$CIFAR10_ROOT:data/cifar10}}'
verify_md5 = {{'$CIFAR10_VERIFY_MD5:True'}}

data_preprocessor = dict(
    type='ClsDataPreprocessor',
    num_classes=10,
    # (0.4914, 0.4822, 0.4465) and (0.2470, 0.2435, 0.2616), in 0..255
    mean=[125.307, 122.961, 113.8575],
    std=[62.985, 62.0925, 66.708],
    to_rgb=False)  # the pipelines hand RGB images to the preprocessor

# Colour order: the network sees RGB. CIFAR10Pickle gives RGB arrays (and
# says so per sample); image files are read as BGR by OpenMMLab's loaders and
# by mmpretrain's inferencers. LoadImageToRGB reads `img_path` when a sample
# has no array and turns every BGR image into RGB, so the test pipeline gives
# the same input for a PNG/JPEG file (ImageClassificationInferencer,
# vis_cam.py) as for the same image in the dataset.
train_pipeline = [
    dict(type='PaddedRandomCrop', crop_size=32, padding=4,
         padding_mode='edge'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageToRGB'), dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        verify_md5=verify_md5,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        verify_md5=verify_md5,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator

# One process x 128 images; `--auto-scale-lr` rescales lr linearly for
# another total batch size (processes x train_dataloader.batch_size).
auto_scale_lr = dict(base_batch_size=128)
