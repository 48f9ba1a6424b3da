# ImageNet-1k, 32 images per GPU (256 in total on 8 GPUs), the paper's
# pipeline: RandomResizedCrop 224 with scale (0.08, 1), AlexNet-style PCA
# lighting noise (alphastd 0.1), horizontal flip; test: resize the short
# edge to 256, center crop 224. Reads mmpretrain's ImageNet layout
# (data_root/{train,val}/ folders, optional meta/{train,val}.txt) from
# $IMAGENET_ROOT (default data/imagenet).
dataset_type = 'ImageNet'
data_root = '{{$IMAGENET_ROOT:data/imagenet}}'

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)  # LoadImageFromFile gives BGR

# PCA of ImageNet pixel colours (0..255 scale), in BGR order because the
# lighting noise is added before the preprocessor converts to RGB.
EIGVAL = [55.4625, 4.7940, 1.1475]
EIGVEC = [
    [-0.5836, -0.6948, 0.4203],
    [-0.5808, -0.0045, -0.8140],
    [-0.5675, 0.7192, 0.4009],
]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.08, 1.0)),
    dict(type='Lighting', eigval=EIGVAL, eigvec=EIGVEC, alphastd=0.1,
         to_rgb=False),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))

test_dataloader = val_dataloader
test_evaluator = val_evaluator

# 8 GPUs x 32 images; `--auto-scale-lr` rescales lr for other totals.
auto_scale_lr = dict(base_batch_size=256)
