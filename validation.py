"""Checks of configuration values at the boundary. Each raises `rillet.errors.ConfigError` with one
message shape: the owner and field, the value, the rule it broke, and what to do.

    from rillet import validation as check

    check.integer("OfflineConfig", "batch_size", 0, low=1, fix="--batch-size")
    # ConfigError: OfflineConfig.batch_size=0 is invalid: it must be an integer >= 1. Fix --batch-size.
    check.number("PACConfig", "gamma", 0.99, 0.0, 1.0)                  # passes; returns 0.99
    check.require(v_min < v_max, "PACConfig", "v_min", v_min, "< v_max")  # any other rule

`fix` says what to change: a CLI option (`cli_option("batch_size")` is "--batch-size"), optionally
with an example ("--learning-rate (e.g. 1e-3)"); without it the message says to set the field.
Every check returns the value unchanged, so `n = check.integer(...)` reads as an assignment.
"""

from __future__ import annotations

import math
import os
from typing import Any, Collection

import numpy as np

from rillet.errors import ConfigError


def cli_option(name: str) -> str:
    """The command-line option of a config field: "batch_size" -> "--batch-size"."""
    return "--" + name.replace("_", "-")


def require(ok: bool, owner: str, name: str, value: Any, rule: str, *, fix: str | None = None) -> None:
    """Raises ConfigError "<owner>.<name>=<value> is invalid: it must be <rule>. Fix <fix>." unless ok."""
    if not ok:
        where = f"{owner}.{name}" if owner else name
        todo = f"Fix {fix}." if fix else f"Set {name} accordingly."
        raise ConfigError(f"{where}={value!r} is invalid: it must be {rule}. {todo}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _bounds(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """" in [0, 1)", " >= 1", " < 5" or "" for the given limits (None or an infinity: no limit)."""
    has_low = low is not None and low != -math.inf
    has_high = high is not None and high != math.inf
    if has_low and has_high:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if has_low:
        return f" {'>' if low_open else '>='} {low}"
    if has_high:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def integer(owner: str, name: str, value: Any, low: int | None = None, high: int | None = None, *,
            fix: str | None = None) -> int:
    """An int (not a bool) with low <= value <= high (None: no limit)."""
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    require(ok, owner, name, value, "an integer" + _bounds(low, high), fix=fix)
    return value


def number(owner: str, name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
           low_open: bool = False, high_open: bool = False, fix: str | None = None) -> float:
    """A finite int or float (not a bool) in the interval from low to high, each end closed unless
    low_open / high_open: number(o, "tau", v, 0, 1, low_open=True) asks for 0 < v <= 1."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    require(ok, owner, name, value, "a finite number" + _bounds(low, high, low_open, high_open), fix=fix)
    return value


def boolean(owner: str, name: str, value: Any, *, fix: str | None = None) -> bool:
    """True or False (a Python or numpy bool; 0 and 1 are refused)."""
    require(isinstance(value, (bool, np.bool_)), owner, name, value, "True or False", fix=fix)
    return value


def int_tuple(owner: str, name: str, value: Any, *, nonempty: bool = False, low: int | None = None,
              fix: str | None = None) -> tuple:
    """A tuple of ints, each >= low (None: no limit); nonempty refuses ()."""
    ok = (isinstance(value, tuple) and (bool(value) or not nonempty)
          and all(_is_int(v) and (low is None or v >= low) for v in value))
    rule = f"{'a non-empty' if nonempty else 'a'} tuple of integers" + _bounds(low, None)
    require(ok, owner, name, value, rule, fix=fix)
    return value


def one_of(owner: str, name: str, value: Any, choices: Collection, *, fix: str | None = None) -> Any:
    """One of `choices` (compared with ==; a bool never matches 0 or 1)."""
    ok = any(value == c and isinstance(value, bool) == isinstance(c, bool) for c in choices)
    require(ok, owner, name, value, f"one of {tuple(choices)!r}", fix=fix)
    return value


def creatable_path(path: str, option: str, error: type[ConfigError] = ConfigError) -> str:
    """The absolute `path`, after checking that its nearest existing ancestor (itself, if it exists) is a
    directory this process can write in; `error` otherwise, naming `option` (e.g. "--run-dir")."""
    path = os.path.abspath(os.fspath(path))
    parent = path
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise error(f"{option} '{path}' lies under '{parent}', which is a file, not a directory. "
                    f"Choose a {option} inside a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{option} '{path}' cannot be written: '{parent}' is read-only for this user. "
                    f"Choose a {option} in a writable directory.")
    return path
