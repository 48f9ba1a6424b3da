"""Argument checks shared by the SKD-BNN losses."""
import math


def check_non_negative(name: str, value, owner: str) -> float:
    """``value`` as a float if finite and >= 0, else a ValueError."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f'{owner}: {name} must be a number, got {value!r}') \
            from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f'{owner}: {name} must be finite and >= 0 (0 turns '
                         f'the loss off), got {value}')
    return value


def check_positive(name: str, value, owner: str) -> float:
    """``value`` as a float if finite and > 0, else a ValueError."""
    value = check_non_negative(name, value, owner)
    if value == 0:
        raise ValueError(f'{owner}: {name} must be > 0, got 0')
    return value
