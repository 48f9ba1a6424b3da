"""Pieces shared by the command-line tools."""
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def import_plugin():
    """Register the plugin (also works from a checkout without install)."""
    try:
        import skd_bnn_mm  # noqa: F401
    except ImportError:
        sys.path.insert(0, ROOT)
        import skd_bnn_mm  # noqa: F401


def check_config_path(path):
    """Fail early, with the known configs, when a config path is wrong."""
    if osp.isfile(path):
        return
    configs = osp.join(ROOT, 'configs')
    name = osp.basename(path)
    known = []
    for dirpath, _, files in os.walk(configs):
        if '_base_' in dirpath:
            continue
        known += [osp.relpath(osp.join(dirpath, f), ROOT) for f in files
                  if f.endswith('.py')]
    close = [k for k in known if name.split('_')[0] in osp.basename(k)]
    hint = close or known
    raise SystemExit(
        f'Config file "{path}" does not exist. '
        + ('Similar configs: ' if close else 'Available configs: ')
        + ', '.join(sorted(hint)[:20]))


def shutdown_distributed():
    """Destroy the process group while the interpreter is still alive;
    ``True`` if there was one.

    Without it, gloo's worker threads can outlive interpreter finalisation
    and abort the process (SIGABRT, "terminate called without an active
    exception") after training has finished, which fails the launch.
    """
    import torch.distributed as torch_dist
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        return True
    return False


def run_tool(main):
    """Run a tool's ``main()``; a distributed run then leaves at once.

    The process group is destroyed in any case. After a successful
    distributed run the process also skips interpreter finalisation
    (``os._exit(0)`` once logs and streams are flushed): even with the group
    destroyed, gloo's threads occasionally abort the finished process at
    finalisation (seen about once in 40 two-process runs here), which
    would turn a completed run into a failed launch.
    """
    try:
        main()
    finally:
        distributed = shutdown_distributed()
    if distributed:
        import logging
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def apply_launcher(cfg):
    """Make distributed launches work on machines without CUDA.

    mmengine's pytorch launcher binds each process to a CUDA device and wraps
    the model in DDP with ``device_ids``; without CUDA we start the process
    group with gloo ourselves and wrap the CPU model with ``device_ids=None``.
    """
    import torch
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise SystemExit(
            f'--launcher {launcher} needs CUDA devices; on a CPU-only machine '
            'use tools/dist_train.sh (torchrun, --launcher pytorch), which '
            'falls back to gloo.')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    import datetime

    import torch.distributed as torch_dist
    if not torch_dist.is_initialized():
        # mmengine passes env_cfg.dist_cfg.timeout to its own launcher only;
        # without it a stopped peer hangs gloo for torch's 30 minutes
        timeout = dist_cfg.get('timeout', None)
        kwargs = {} if timeout is None else dict(
            timeout=datetime.timedelta(seconds=float(timeout)))
        torch_dist.init_process_group(backend=dist_cfg['backend'], **kwargs)
    if torch_dist.get_rank() == 0:
        print(f'No CUDA device: distributed training on CPU with '
              f'{dist_cfg["backend"]} ({torch_dist.get_world_size()} '
              'processes).', flush=True)
    wrapper = cfg.get('model_wrapper_cfg', None) or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
