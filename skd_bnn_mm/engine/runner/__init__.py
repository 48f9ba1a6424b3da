from .safe_runner import SafeRunner, state_dict_mismatches

__all__ = ['SafeRunner', 'state_dict_mismatches']
