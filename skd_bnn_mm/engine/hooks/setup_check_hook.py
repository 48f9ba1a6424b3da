"""Refuse, before the first iteration, a run whose hooks do not fit the
model."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class SetupCheckHook(Hook):
    """Check that the plugin's hooks match the model being trained.

    A config that binarises with EDE but lists no ``EDEHook`` trains the
    whole run at the initial ``t`` (EDE never sharpens); an SKD model with a
    soft-label bank but no ``SoftLabelBankHook`` never fills the bank
    (``loss_label`` stays 0); two ``EDEHook`` or ``SoftLabelBankHook``
    instances both run; training labels past ``head.num_classes`` would fail
    deep inside the loss. Each of these fails here, at ``before_train``, with
    the line to change. In every config (``default_hooks``).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        from skd_bnn_mm.models.distill import SoftLabelBank
        from skd_bnn_mm.models.layers import IRConv2d
        from .ede_hook import EDEHook
        from .soft_label_bank_hook import SoftLabelBankHook
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        modules = list(model.modules())
        problems = []
        for kind in (EDEHook, SoftLabelBankHook):
            count = sum(isinstance(h, kind) for h in runner.hooks)
            if count > 1:
                problems.append(
                    f'{count} {kind.__name__} hooks are registered; they '
                    'would all run. Keep one in custom_hooks (a config that '
                    'inherits custom_hooks and adds its own gets both).')
        ede = [m for m in modules
               if isinstance(m, IRConv2d) and m.sign_method == 'ede']
        if ede and not any(isinstance(h, EDEHook) for h in runner.hooks):
            problems.append(
                f'the model has {len(ede)} IRConv2d layers with sign="ede" '
                'but no EDEHook: t would stay at its initial value for the '
                "whole run. Add dict(type='EDEHook', t_min=1e-3, t_max=10.0) "
                "to custom_hooks, or use conv_cfg sign='ste'.")
        if any(isinstance(m, SoftLabelBank) for m in modules) and not any(
                isinstance(h, SoftLabelBankHook) for h in runner.hooks):
            problems.append(
                'the model has a SoftLabelBank but no SoftLabelBankHook: the '
                'bank would never be filled and loss_label would stay 0. Add '
                "dict(type='SoftLabelBankHook') to custom_hooks, or remove "
                'the label loss from model.distill.')
        from skd_bnn_mm.datasets import check_labels_fit, model_num_classes
        try:
            check_labels_fit(runner.train_dataloader.dataset,
                             model_num_classes(model))
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise ValueError('Training not started: '
                             + ' Also: '.join(problems))
