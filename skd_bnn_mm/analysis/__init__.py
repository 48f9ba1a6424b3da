"""Analysis: operation counts, sign agreement, features, logs and pictures.

matplotlib and sklearn are imported only inside the plotting functions.
"""
from .bank import BANK_SUFFIX, load_soft_label_bank
from .features import penultimate_features
from .logs import find_scalars, load_scalars
from .ops_counter import (BOPS_PER_OP, LayerOps, OpsReport, count_ops,
                          layer_table, summary_row, summary_table)
from .plots import (plot_bank_heatmap, plot_sign_agreement,
                    plot_training_curves, plot_tsne, softmax_rows,
                    tsne_embedding)
from .sign_agreement import sign_agreement

__all__ = [
    'BANK_SUFFIX', 'BOPS_PER_OP', 'LayerOps', 'OpsReport', 'count_ops',
    'find_scalars', 'layer_table', 'load_scalars', 'load_soft_label_bank',
    'penultimate_features', 'plot_bank_heatmap', 'plot_sign_agreement',
    'plot_training_curves', 'plot_tsne', 'sign_agreement', 'softmax_rows',
    'summary_row', 'summary_table', 'tsne_embedding'
]
