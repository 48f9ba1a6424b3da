"""mmpretrain's CIFAR-10 with an explicit checksum switch and clear errors."""
import os.path as osp
import pickle

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
        try:
            return super().load_data_list()
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as e:
            raise RuntimeError(
                f'A CIFAR-10 file in "{self._folder()}" is corrupt ({e!r}). '
                f'Delete the folder and get the data again. {HOW_TO_GET}') \
                from e

    def _load_meta(self):
        if self.verify_md5:
            return super()._load_meta()
        path = osp.join(self._folder(), self.meta['filename'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'CIFAR-10 metadata "{path}" is missing. '
                                    f'{HOW_TO_GET}')
        with open(path, 'rb') as f:
            data = pickle.load(f, encoding='latin1')
        self._metainfo.setdefault('classes', data[self.meta['key']])
