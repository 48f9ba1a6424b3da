"""PNG pictures for analysis: t-SNE, soft-label bank, sign agreement, curves.

matplotlib (and sklearn for t-SNE) are imported inside the functions, and
figures are drawn with the object-oriented API on an Agg canvas, so nothing
here touches pyplot's global backend or needs a display.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: str) -> str:
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, format='png')
    return out


def tsne_embedding(features: np.ndarray, perplexity: Optional[float] = None,
                   seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``features`` ``[N, D]`` (sklearn, PCA init; exact
    gradients up to 500 points, Barnes-Hut above).

    ``perplexity`` defaults to ``min(30, (N - 1) / 3)``: sklearn needs it
    below N.
    """
    from sklearn.manifold import TSNE
    n = features.shape[0]
    if n < 4:
        raise ValueError(f't-SNE needs at least 4 samples, got {n}')
    if perplexity is None:
        perplexity = min(30.0, (n - 1) / 3)
    if not 0 < perplexity < n:
        raise ValueError(f'perplexity must be in (0, {n}), got {perplexity}')
    # exact gradients are faster than Barnes-Hut for a few hundred points
    method = 'exact' if n <= 500 else 'barnes_hut'
    tsne = TSNE(n_components=2, perplexity=perplexity, init='pca',
                learning_rate='auto', method=method, random_state=seed)
    return tsne.fit_transform(np.asarray(features, dtype=np.float32))


def plot_tsne(features: np.ndarray, labels: np.ndarray, out: str,
              class_names: Optional[Sequence[str]] = None,
              perplexity: Optional[float] = None, seed: int = 0,
              title: str = 't-SNE of penultimate features') -> np.ndarray:
    """Scatter the t-SNE of ``features`` coloured by ``labels``; returns
    the ``[N, 2]`` embedding."""
    emb = tsne_embedding(features, perplexity, seed)
    labels = np.asarray(labels)
    fig = _figure(7, 6)
    ax = fig.add_subplot(1, 1, 1)
    from matplotlib import colormaps
    classes = np.unique(labels)
    cmap = colormaps['tab10' if len(classes) <= 10 else 'tab20']
    for i, c in enumerate(classes):
        sel = labels == c
        name = class_names[int(c)] if class_names is not None and \
            int(c) < len(class_names) else str(c)
        ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=cmap(i % cmap.N),
                   label=name)
    ax.set_title(f'{title} ({len(labels)} images)')
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(loc='best', fontsize=7, markerscale=2)
    _save(fig, out)
    return emb


def softmax_rows(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def plot_bank_heatmap(bank: np.ndarray, out: str,
                      classes: Optional[Sequence[str]] = None,
                      temperature: Optional[float] = None,
                      counts: Optional[np.ndarray] = None) -> np.ndarray:
    """Class-by-class heat map of the soft-label bank.

    Row ``i`` is the soft label of class ``i``. With ``temperature`` the
    rows are shown as ``softmax(bank / T)``, the distribution the label loss
    matches; otherwise as raw mean logits. Returns the matrix drawn.
    """
    mat = softmax_rows(bank, temperature) if temperature else \
        np.asarray(bank, dtype=np.float64)
    c = mat.shape[0]
    names = list(classes) if classes is not None else [str(i)
                                                       for i in range(c)]
    size = max(5.0, 0.45 * c + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(mat, cmap='viridis', aspect='equal')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ylabels = names if counts is None else \
        [f'{n} ({int(k)})' for n, k in zip(names, counts)]
    ax.set_yticklabels(ylabels, fontsize=7)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class' + (' (correct samples)' if counts is not None
                                  else ''))
    what = f'softmax(bank / {temperature:g})' if temperature else \
        'mean logits'
    ax.set_title(f'Soft-label bank: {what}')
    if c <= 12:
        mid = (mat.max() + mat.min()) / 2
        for i in range(c):
            for j in range(c):
                ax.text(j, i, f'{mat[i, j]:.2f}', ha='center', va='center',
                        fontsize=6,
                        color='black' if mat[i, j] > mid else 'white')
    _save(fig, out)
    return mat


def plot_sign_agreement(agreement: Dict[str, float], out: str,
                        title: str = 'Sign agreement, binary vs real conv'
                        ) -> str:
    """Bar per binary conv of the fraction of equal output signs."""
    if not agreement:
        raise ValueError('no agreement values to plot')
    names = list(agreement)
    values = [agreement[n] for n in names]
    fig = _figure(max(6.0, 0.35 * len(names) + 2), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(names)), values, color='tab:blue')
    mean = float(np.mean(values))
    ax.axhline(mean, color='tab:red', linestyle='--',
               label=f'mean {mean:.3f}')
    ax.axhline(0.5, color='grey', linestyle=':', label='chance (0.5)')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('fraction of equal signs')
    ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    return _save(fig, out)


def plot_training_curves(runs: Dict[str, dict], out: str,
                         keys: Optional[List[str]] = None) -> List[str]:
    """Curves of one or more runs parsed by :func:`load_scalars`.

    One panel per key: training keys against the iteration, validation keys
    against the epoch. ``keys`` defaults to every loss, ``lr`` and every
    validation metric found. Returns the keys drawn.
    """
    if not runs:
        raise ValueError('no runs to plot')
    found = []
    for data in runs.values():
        for part in ('train', 'val'):
            for key in data.get(part, {}):
                if (part, key) not in found:
                    found.append((part, key))
    if keys:
        unknown = [k for k in keys if k not in [f[1] for f in found]]
        if unknown:
            raise KeyError(f'keys {unknown} are not in the logs; available: '
                           f'{sorted({f[1] for f in found})}')
        panels = [f for f in found if f[1] in keys]
    else:
        panels = [f for f in found if f[0] == 'val' or f[1] == 'lr'
                  or f[1].startswith('loss')]
    if not panels:
        raise ValueError('the logs hold no loss, lr or metric to plot')
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = _figure(4.5 * cols, 3.2 * rows)
    for i, (part, key) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, data in runs.items():
            series = data.get(part, {}).get(key)
            if not series:
                continue
            xs, ys = zip(*series)
            ax.plot(xs, ys, marker='o' if len(xs) < 30 else None,
                    markersize=3, label=label)
        ax.set_title(key)
        ax.set_xlabel('iteration' if part == 'train' else 'epoch')
        if key == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
        if len(runs) > 1:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    _save(fig, out)
    return [k for _, k in panels]
