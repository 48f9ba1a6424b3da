"""Run one of the project's command-line tools in a child process, as a
user would, on the checkout under test."""
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(args, root=None, check=True):
    """``python ARGS...`` from the checkout root; ``root`` is the CIFAR-10
    folder (the bundled copy: checksums off). With ``check`` a non-zero exit
    fails with the tails of both outputs."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if root is not None:
        env.update(CIFAR10_ROOT=str(root), CIFAR10_VERIFY_MD5='False')
    proc = subprocess.run([sys.executable, *map(str, args)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed:\n{proc.stdout[-3000:]}\n'
                             f'{proc.stderr[-3000:]}')
    return proc
