"""mmpretrain's CIFAR-10 with an explicit checksum switch and clear errors."""
import os.path as osp
import pickle

import numpy as np
from mmengine import dist
from mmengine.logging import MMLogger
from mmpretrain.datasets import CIFAR10
from mmpretrain.datasets.utils import check_md5, download_and_extract_archive
from mmpretrain.registry import DATASETS

HOW_TO_GET = (
    'Get CIFAR-10 in one of these ways: (1) leave download=True on a machine '
    'with internet access (the official archive is fetched into data_root); '
    '(2) unpack the official "CIFAR-10 python version" archive '
    '(https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) into '
    'data_root; (3) write a local copy with make_cifar10.py (bundled JPEG copy) '
    'and train with verify_md5=False (env CIFAR10_VERIFY_MD5=False for the '
    'configs of this project). Point the configs at another folder with the '
    'environment variable CIFAR10_ROOT.')

#: the only globals a CIFAR-10 batch file may name: numpy arrays (numpy 1
#: and 2 module paths) and how protocol-2 pickles spell bytes
_ARRAY_GLOBALS = {
    ('__builtin__', 'bytes'), ('builtins', 'bytes'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('_codecs', 'encode'),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the dicts of numpy arrays and lists of CIFAR-10's files and
    refuses any other global: a crafted batch file cannot call a function."""

    def find_class(self, module, name):
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'the file names the Python object {module}.{name}, which a '
            'CIFAR-10 file never holds (nothing was run)')


def _read_pickle(path):
    with open(path, 'rb') as f:
        return _ArrayUnpickler(f, encoding='latin1').load()


@DATASETS.register_module()
class CIFAR10Pickle(CIFAR10):
    """CIFAR-10 in the official python-pickle layout, with ``verify_md5``.

    Same samples and metainfo as :class:`mmpretrain.datasets.CIFAR10`, with
    three differences that matter for real use:

    - ``verify_md5=False`` accepts a copy whose files differ from the official
      archive (for example one decoded from JPEGs); it logs a warning, since
      results on such a copy are not comparable to published ones.
    - Existing files are never overwritten: a checksum mismatch is an error
      that names the switch, where mmpretrain would download over them.
    - A missing folder says where it looked and how to get the data.
    - Every batch file is checked: as many labels as images, labels in
      ``0 .. len(classes) - 1``, a split with at least one image; an error
      names the file and what is wrong (mmpretrain would shift later labels,
      or fail later inside the loss). Files are unpickled with an allow-list
      of numpy globals only.

    Images are RGB arrays (as in the files); every sample says so with
    ``channel_order='rgb'``, which :class:`LoadImageToRGB` reads, so the
    same test pipeline serves these arrays and BGR image files.
    """

    def __init__(self, *args, verify_md5: bool = True, **kwargs):
        if not isinstance(verify_md5, bool):
            raise TypeError(f'verify_md5 must be True or False, got '
                            f'{verify_md5!r}')
        self.verify_md5 = verify_md5
        super().__init__(*args, **kwargs)

    def _folder(self):
        return osp.join(self.data_prefix['root'], self.base_folder)

    def _missing_files(self):
        return [name for name, _ in self.train_list + self.test_list
                if not osp.isfile(osp.join(self._folder(), name))]

    def _mismatched_files(self):
        return [name for name, md5 in self.train_list + self.test_list
                if md5 is not None
                and not check_md5(osp.join(self._folder(), name), md5)]

    def _check_integrity(self):
        if self._missing_files():
            return False
        return (not self.verify_md5) or not self._mismatched_files()

    def load_data_list(self):
        root = self.data_prefix['root']
        if dist.is_main_process():
            missing = self._missing_files()
            if missing and len(missing) < len(self.train_list + self.test_list):
                raise FileNotFoundError(
                    f'CIFAR-10 in "{self._folder()}" is incomplete: missing '
                    f'{missing}. Nothing was changed there. {HOW_TO_GET}')
            if missing:
                if not self.download:
                    raise FileNotFoundError(
                        f'CIFAR-10 not found: looked for '
                        f'"{self._folder()}/data_batch_1..5, test_batch". '
                        f'{HOW_TO_GET}')
                try:
                    download_and_extract_archive(
                        self.url, root, filename=self.filename,
                        md5=self.tgz_md5)
                except Exception as e:  # no network, proxy, disk...
                    raise FileNotFoundError(
                        f'CIFAR-10 not found in "{self._folder()}" and the '
                        f'download from {self.url} failed ({e!r}). '
                        f'{HOW_TO_GET}') from e
            elif self.verify_md5:
                bad = self._mismatched_files()
                if bad:
                    raise RuntimeError(
                        f'CIFAR-10 files in "{self._folder()}" do not match the '
                        f'official MD5 sums: {bad}. Nothing was changed or '
                        're-downloaded. If this is a known non-official copy '
                        '(such as one decoded from the bundled JPEGs), set '
                        'verify_md5=False on the dataset (env '
                        'CIFAR10_VERIFY_MD5=False for this project\'s configs); '
                        'otherwise delete the folder and download again.')
            if not self.verify_md5:
                MMLogger.get_current_instance().warning(
                    f'verify_md5=False: CIFAR-10 in "{self._folder()}" is used '
                    'without checking the official MD5 sums; accuracies on a '
                    'non-official copy are not comparable to published ones.')
        dist.barrier()
        files = self.train_list if self.split == 'train' else self.test_list
        if self.CLASSES is None:  # the file's class names come last
            self._load_meta()
        num_classes = len(self._metainfo['classes'])
        images, labels = [], []
        for name, _ in files:
            data, file_labels = self._read_batch(name, num_classes)
            images.append(data)
            labels.extend(file_labels)
        total = sum(len(d) for d in images)
        if total == 0:
            raise RuntimeError(
                f'The {self.split} split of CIFAR-10 in "{self._folder()}" '
                f'has no images ({", ".join(n for n, _ in files)} hold 0 '
                'each). Get the data again, or point data_root at a copy '
                f'with images. {HOW_TO_GET}')
        # CHW rows -> HWC, one contiguous block shared by the samples
        imgs = np.ascontiguousarray(
            np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3,
                                                                    1))
        return [dict(img=img, gt_label=int(label), channel_order='rgb')
                for img, label in zip(imgs, labels)]

    def _read_batch(self, name, num_classes):
        """``(data [N, 3072] uint8, N labels)`` of one batch file, checked."""
        path = osp.join(self._folder(), name)
        try:
            entry = _read_pickle(path)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                AttributeError, ImportError, IndexError) as e:
            raise RuntimeError(
                f'CIFAR-10 file "{path}" is corrupt ({e}). Delete the folder '
                f'and get the data again. {HOW_TO_GET}') from e
        key = 'labels' if isinstance(entry, dict) and 'labels' in entry \
            else 'fine_labels'
        if not (isinstance(entry, dict) and 'data' in entry
                and key in entry):
            raise RuntimeError(
                f'CIFAR-10 file "{path}" is corrupt: expected a dict with '
                f'"data" and "labels". Get the data again. {HOW_TO_GET}')
        data = np.asarray(entry['data'])
        if data.dtype != np.uint8 or data.ndim != 2 or \
                data.shape[1] != 3 * 32 * 32:
            raise RuntimeError(
                f'CIFAR-10 file "{path}" is corrupt: "data" is '
                f'{data.dtype} {data.shape}, expected uint8 [N, 3072]. Get '
                f'the data again. {HOW_TO_GET}')
        labels = list(entry[key])
        if len(labels) != len(data):
            raise RuntimeError(
                f'CIFAR-10 file "{path}" holds {len(data)} images but '
                f'{len(labels)} labels: images and labels no longer '
                'correspond (every later label would be shifted). Nothing '
                f'was read; get the data again. {HOW_TO_GET}')
        for i, label in enumerate(labels):
            if isinstance(label, (bool, np.bool_)) or not isinstance(
                    label, (int, np.integer)) or not 0 <= label < num_classes:
                raise RuntimeError(
                    f'CIFAR-10 file "{path}": label {label!r} of image {i} '
                    f'is not a class index 0..{num_classes - 1} (the dataset '
                    f'has {num_classes} classes). Fix or regenerate the file, '
                    'or give metainfo the full list of classes.')
        return data, labels

    def _load_meta(self):
        path = osp.join(self._folder(), self.meta['filename'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'CIFAR-10 metadata "{path}" is missing. '
                                    f'{HOW_TO_GET}')
        md5 = self.meta.get('md5')
        if self.verify_md5 and md5 is not None and not check_md5(path, md5):
            raise RuntimeError(
                f'CIFAR-10 metadata "{path}" does not match the official MD5 '
                'sum. Nothing was changed; for a known non-official copy set '
                'verify_md5=False (env CIFAR10_VERIFY_MD5=False).')
        try:
            data = _read_pickle(path)
            classes = data[self.meta['key']]
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError,
                KeyError, AttributeError, ImportError, IndexError) as e:
            raise RuntimeError(
                f'CIFAR-10 metadata "{path}" is corrupt ({e}). Get the data '
                f'again. {HOW_TO_GET}') from e
        self._metainfo.setdefault('classes', classes)
