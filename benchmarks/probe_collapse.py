"""Collapse-probe throughput: lengths probed per second on a 4-layer decoder-only transformer
(d_model 64, 4 heads, rotary positions, float32) for sequences of up to 4,096 tokens on CPU.

    batched: `evals.probes.collapse.pair_distances` -- every sequence of every length as one prefix tree
             (every shared prefix once, each token attending to its ancestors; the transformer's
             tree_attention) in one jitted call
    loop:    a Python loop over lengths, each pair run through one jitted function at its exact shape
             (so every new length compiles)

Both are timed cold (compilation included: a sweep over new lengths pays it; jax.clear_caches() before
each) and warm (run again), after one untimed warm-up call at length 8 (JAX's process start-up is
part of neither); each timing is the best of --repeats.

    .venv/bin/python benchmarks/probe_collapse.py
    .venv/bin/python benchmarks/probe_collapse.py --max-length 1024 --num-lengths 8   # quick
    .venv/bin/python benchmarks/probe_collapse.py --num-lengths 48 --repeats 1 --no-warm   # cold only

The ratio grows with --num-lengths: the loop compiles two shapes per length, the batched path one tree.
Each family's line ends with the machine's load averages (os.getloadavg, as `uptime` prints them).

Prints per family, then, last, the ratio of lengths probed per second, batched / loop (cold, all families).
"""

from __future__ import annotations

import argparse
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rillet.evals.probes.collapse import pair_distances
from rillet.evals.probes.inputs import get_family
from rillet.learners.networks.transformer import DecoderTransformer, TransformerConfig


def probe_lengths(max_length: int, num: int) -> list[int]:
    """Geometric lengths n from 16 so that the longer sequence of every pair (<= n + 2) fits max_length."""
    return sorted({int(n) for n in np.geomspace(16, max_length - 2, num)})


@eqx.filter_jit
def _last(model, tokens):
    return model(tokens).hidden[-1, -1]


def loop_distances(model, lengths, family) -> np.ndarray:
    """The baseline: one jitted call per length at the pair's exact shapes; final-layer ∞-distance [N]."""
    last, out = _last, []
    for n in lengths:
        a, b = family(n)
        out.append(float(jnp.abs(last(model, jnp.asarray(a)) - last(model, jnp.asarray(b))).max()))
    return np.asarray(out)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def cold_warm(fn, repeats: int, warm: bool = True):
    """(result, best cold seconds, best warm seconds or nan): caches cleared before each cold call."""
    colds, warms = [], [float("nan")]
    for _ in range(repeats):
        jax.clear_caches()
        result, t = timed(fn)
        colds.append(t)
        if warm:
            warms.append(timed(fn)[1])
    return result, min(colds), min(warms[1:] or warms)


def load() -> str:
    """The 1, 5 and 15 minute load averages (as `uptime` prints them) and the number of CPUs."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--num-lengths", type=int, default=12)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--families", nargs="+", default=["ones", "ones_zero"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-warm", dest="warm", action="store_false", help="time cold calls only")
    args = parser.parse_args()
    config = TransformerConfig(vocab_size=4, d_model=64, num_heads=4, num_layers=args.layers)
    model = DecoderTransformer(config, jax.random.PRNGKey(0))
    lengths = probe_lengths(args.max_length, args.num_lengths)
    print(f"device {jax.devices()[0].platform}; {args.layers} layers, d_model 64; {len(lengths)} lengths "
          f"{lengths[0]}..{lengths[-1]}; {load()}", flush=True)
    jax.block_until_ready(eqx.filter_jit(lambda m, t: m(t))(model, jnp.zeros(8, jnp.int32)))  # warm-up
    total = {"batched": 0.0, "loop": 0.0}
    for name in args.families:
        family = get_family(name)
        batched, t_batched, w_batched = cold_warm(lambda: pair_distances(model, lengths, family)["inf"][:, -1],
                                                  args.repeats, args.warm)
        loop, t_loop, w_loop = cold_warm(lambda: loop_distances(model, lengths, family), args.repeats, args.warm)
        np.testing.assert_allclose(batched, loop, rtol=1e-3, atol=1e-5)  # the same numbers
        total["batched"] += t_batched
        total["loop"] += t_loop
        n = len(lengths)
        print(f"{name}: batched {n / t_batched:.2f} lengths/s cold ({t_batched:.1f} s), {n / w_batched:.2f} warm; "
              f"loop {n / t_loop:.2f} lengths/s cold ({t_loop:.1f} s), {n / w_loop:.2f} warm; "
              f"ratio cold {t_loop / t_batched:.2f}x, warm {w_loop / w_batched:.2f}x; {load()}", flush=True)
    print(f"ratio batched / loop, lengths probed per second (cold, all families): "
          f"{total['loop'] / total['batched']:.2f}x")


if __name__ == "__main__":
    main()
