"""Inputs of the sequence-model probes: the separator transform and the pair families of the collapse
probe (Barbero et al., NeurIPS 2024, "Transformers need glasses!", section 4).

A pair family maps a length n to two int token sequences that differ only at their end:

    ones(n)        -> (1^n, 1^(n+1))            n vs n+1 repeats of one token ("1…1")
    ones_zero(n)   -> (1^n 0, 1^(n+1) 0)        the same with a final 0 ("1…10")
    repeat_last(n) -> (x_1..x_n, x_1..x_n x_n)  a fixed random prefix (tokens 0..3) with its last token repeated
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from rillet.errors import ConfigError

__all__ = ["insert_separators", "separator_positions", "ones", "ones_zero", "repeat_last", "FAMILIES",
           "get_family", "with_separators"]

PairFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def separator_positions(length: int, every: int) -> np.ndarray:
    """int [T]: where token t lands after inserting a separator after every `every` tokens (none after
    the last token): t + t // every."""
    t = np.arange(length)
    return t + t // every if every > 0 else t


def insert_separators(tokens: np.ndarray, every: int, separator: int) -> np.ndarray:
    """tokens [..., T] -> [..., T + (T-1) // every]: a `separator` after each `every` tokens, never last.
    every=0 returns the tokens unchanged."""
    tokens = np.asarray(tokens)
    if every <= 0:
        return tokens
    length = tokens.shape[-1]
    out = np.full(tokens.shape[:-1] + (length + max(length - 1, 0) // every,), separator, tokens.dtype)
    out[..., separator_positions(length, every)] = tokens
    return out


def ones(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.ones(n, np.int32), np.ones(n + 1, np.int32)


def ones_zero(n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = ones(n)
    return np.append(a, 0).astype(np.int32), np.append(b, 0).astype(np.int32)


_PREFIX = np.random.default_rng(0).integers(0, 4, 1 << 16).astype(np.int32)


def repeat_last(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = _PREFIX[:n]
    return x, np.append(x, x[-1]).astype(np.int32)


FAMILIES: dict[str, PairFn] = {"ones": ones, "ones_zero": ones_zero, "repeat_last": repeat_last}


def get_family(family: str | PairFn) -> PairFn:
    """A family name (FAMILIES) or a user function n -> (tokens_a, tokens_b)."""
    if callable(family):
        return family
    if family not in FAMILIES:
        raise ConfigError(f"unknown pair family {family!r}; use one of {sorted(FAMILIES)} or a function "
                          "n -> (tokens_a, tokens_b).")
    return FAMILIES[family]


def with_separators(family: PairFn, every: int, separator: int) -> PairFn:
    """The family with `insert_separators(., every, separator)` applied to both sequences."""
    if every <= 0:
        return family
    return lambda n: tuple(insert_separators(x, every, separator) for x in family(n))
