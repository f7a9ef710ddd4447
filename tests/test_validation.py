"""rillet.validation: every check passes good values unchanged and refuses each kind of bad value with
a ConfigError naming the owner and field, the rule, and what to do."""

import math

import numpy as np
import pytest

from rillet import validation as check
from rillet.errors import ConfigError


def refused(fn, *args, **kwargs) -> str:
    """The message of the ConfigError `fn` raises (the test fails if it raises none)."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def test_require_message_names_owner_field_value_rule_and_fix():
    check.require(True, "Cfg", "x", 3, "odd")
    msg = refused(check.require, False, "Cfg", "x", 4, "odd", fix="--x")
    assert msg == "Cfg.x=4 is invalid: it must be odd. Fix --x."
    assert refused(check.require, False, "Cfg", "x", 4, "odd") == "Cfg.x=4 is invalid: it must be odd. Set x accordingly."
    assert refused(check.require, False, "", "n", 0, "odd").startswith("n=0 is invalid")


def test_cli_option():
    assert check.cli_option("eval_max_episode_steps") == "--eval-max-episode-steps"


def test_integer():
    assert check.integer("Cfg", "n", 3, low=1) == 3
    assert check.integer("Cfg", "n", np.int64(5), low=1, high=5) == 5
    assert check.integer("Cfg", "n", -7) == -7  # no limits
    assert "Cfg.n=0 is invalid: it must be an integer >= 1. Fix --n." == refused(check.integer, "Cfg", "n", 0, low=1,
                                                                                   fix="--n")
    assert "an integer in [1, 4]" in refused(check.integer, "Cfg", "n", 5, low=1, high=4)
    assert "an integer <= 4" in refused(check.integer, "Cfg", "n", 5, high=4)
    for bad in (True, 2.0, "2", None):
        assert "Cfg.n=" in refused(check.integer, "Cfg", "n", bad, low=1)


def test_number():
    assert check.number("Cfg", "gamma", 0.99, 0.0, 1.0) == 0.99
    assert check.number("Cfg", "gamma", 1, 0.0, 1.0) == 1  # ints are numbers; the ends are closed
    assert check.number("Cfg", "gamma", np.float32(0.5), 0.0, 1.0) == np.float32(0.5)
    assert check.number("Cfg", "x", -1e9) == -1e9
    assert "a finite number in [0.0, 1.0]" in refused(check.number, "Cfg", "gamma", 1.5, 0.0, 1.0)
    assert "a finite number in (0, 1]" in refused(check.number, "Cfg", "tau", 0.0, 0, 1, low_open=True)
    assert "a finite number in [0, 1)" in refused(check.number, "Cfg", "f", 1.0, 0, 1, high_open=True)
    assert "a finite number > 0" in refused(check.number, "Cfg", "lr", -1e-3, 0, low_open=True)
    assert "a finite number <= 2" in refused(check.number, "Cfg", "x", 3, high=2)
    for bad in (math.nan, math.inf, True, "0.5", None, 1j):
        assert "Cfg.x=" in refused(check.number, "Cfg", "x", bad, fix="--x")


def test_boolean():
    assert check.boolean("Cfg", "dueling", True) is True
    assert check.boolean("Cfg", "dueling", np.bool_(False)) == np.False_
    for bad in (1, 0, "yes", None):
        assert "Cfg.dueling=" in refused(check.boolean, "Cfg", "dueling", bad)
    assert "it must be True or False. Fix --dueling." in refused(check.boolean, "Cfg", "dueling", 1, fix="--dueling")


def test_int_tuple():
    assert check.int_tuple("Cfg", "hidden_sizes", (256, 256), nonempty=True, low=1) == (256, 256)
    assert check.int_tuple("Cfg", "hidden_sizes", ()) == ()
    assert "a non-empty tuple of integers >= 1" in refused(check.int_tuple, "Cfg", "hidden_sizes", (), nonempty=True,
                                                           low=1)
    for bad in ([256], (256, 0), (2.0,), (True,), "256"):
        assert "Cfg.hidden_sizes=" in refused(check.int_tuple, "Cfg", "hidden_sizes", bad, low=1)


def test_one_of():
    assert check.one_of("Cfg", "sampler", "uniform", ("uniform", "prioritized")) == "uniform"
    assert check.one_of("Cfg", "attention", None, (None, "cudnn")) is None
    msg = refused(check.one_of, "Cfg", "sampler", "greedy", ("uniform", "prioritized"), fix="--sampler")
    assert msg == "Cfg.sampler='greedy' is invalid: it must be one of ('uniform', 'prioritized'). Fix --sampler."
    assert "Cfg.k=True" in refused(check.one_of, "Cfg", "k", True, (1, 2))  # a bool is not the int 1


def test_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)
    with pytest.raises(ValueError):
        check.integer("Cfg", "n", -1, low=0)
