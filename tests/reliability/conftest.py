"""Fixtures of the reliability tests: data, a reference run, and a clean
global state for in-process runners."""
import pytest
import torch
from reliability_utils import EPOCHS, TINY, TRAIN, run_cli


@pytest.fixture(scope='session')
def data_root(cifar10_subset):
    return cifar10_subset(20, 10)


@pytest.fixture(scope='session')
def reference_run(data_root, tmp_path_factory):
    """An uninterrupted 3-epoch CLI run of the tiny config."""
    work = tmp_path_factory.mktemp('reference')
    run_cli([TRAIN, TINY, '--work-dir', work], data_root)
    for epoch in range(1, EPOCHS + 1):
        assert (work / f'epoch_{epoch}.pth').is_file()
    return work


@pytest.fixture(autouse=True)
def _one_thread_and_restore_determinism():
    """In-process runners: one thread; undo ``deterministic=True``."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = \
        cudnn

