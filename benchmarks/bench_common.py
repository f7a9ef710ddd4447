"""Helpers shared by the benchmarks that time rillet against a plain-JAX baseline in one process:
matmul/conv FLOPs counted from a jaxpr, interleaved timing of two step functions, and the largest
difference between two pytrees of arrays. Imported by the scripts beside it (run as files, the
benchmarks folder is on sys.path): `from bench_common import jaxpr_flops`.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["jaxpr_flops", "step_flops", "interleaved_rates", "max_abs_diff", "max_rel_diff"]


def _subjaxprs(value):
    """Jaxprs held in an equation parameter (duck-typed: works across JAX versions)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    for v in items:
        if hasattr(v, "eqns"):
            yield v
        elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
            yield v.jaxpr


def jaxpr_flops(jaxpr) -> float:
    """Matmul/conv FLOPs of a jaxpr (2 per multiply-add; elementwise ops ignored), recursing into
    sub-jaxprs (scan: x length; cond: max branch)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
        elif name == "conv_general_dilated":
            dims = eqn.params["dimension_numbers"]
            rhs = eqn.invars[1].aval.shape
            rhs_spec = dims.rhs_spec if dims is not None else tuple(range(len(rhs)))  # (out, in, *window)
            per_output = math.prod(rhs[i] for i in rhs_spec[1:])  # in / groups x window
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * per_output
        subs = [j for v in eqn.params.values() for j in _subjaxprs(v)]
        if name == "cond":
            total += max((jaxpr_flops(j) for j in subs), default=0.0)
        else:
            total += sum(jaxpr_flops(j) for j in subs) * (eqn.params.get("length", 1) if name == "scan" else 1)
    return total


def step_flops(fn: Callable, *args) -> float:
    """jaxpr_flops of fn(*args), traced (not run)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def interleaved_rates(steps: dict[str, Callable[[Any], Any]], states: dict[str, Any], iters: int,
                      rounds: int) -> dict[str, dict[str, list[float]]]:
    """Calls/s of each named step function `state -> state`, timed in turns: every round runs each
    function `iters` times (after a block on its previous output) in the given order, then the next
    round reverses the order, so that slow phases of a noisy machine hit both sides alike. Returns
    {"wall": {name: [calls/s per round]}, "cpu": {name: [calls per CPU second of this process]}}: on a
    machine shared with other jobs the process CPU time is the steadier measure of the work done.
    The states (already compiled and warmed up) are carried on."""
    names = list(steps)
    rates = {"wall": {name: [] for name in steps}, "cpu": {name: [] for name in steps}}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            state = jax.block_until_ready(states[name])
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(iters):
                state = steps[name](state)
            states[name] = jax.block_until_ready(state)
            rates["cpu"][name].append(iters / (time.process_time() - c0))
            rates["wall"][name].append(iters / (time.perf_counter() - t0))
    return rates


def median_ratio(rates: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of rates[num] / rates[den] (each round's pair ran back to back)."""
    return statistics.median(a / b for a, b in zip(rates[num], rates[den]))


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over the leaves of two pytrees of arrays with the same structure."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def max_rel_diff(a, b, floor: float = 1e-6) -> float:
    """Largest |a - b| / max(|b|, floor) over the leaves of two pytrees of arrays."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                            / np.maximum(np.abs(np.asarray(y, np.float64)), floor)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
