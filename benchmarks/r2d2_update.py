"""R2D2 learner throughput: jitted `r2d2.update` calls per second on the Atari conv-LSTM network
(obs (4, 84, 84) uint8, 6 actions, LSTM 512, dueling head) with a fixed device-resident batch of
sequences of burn_in + trace + 1 steps (data loading excluded; compilation and warm-up excluded).

    .venv/bin/python benchmarks/r2d2_update.py                  # paper setting: 64 x (40 + 80)
    .venv/bin/python benchmarks/r2d2_update.py --batch 8 --burn-in 8 --trace 16   # quick CPU run
    .venv/bin/python benchmarks/r2d2_update.py --scan-unroll 1 8      # LSTM loop unrolling, ratio vs 1

Prints the device, updates/s and, last, the ratio against the paper's ~5 updates/s.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import r2d2

PAPER_UPDATES_PER_S = 5.0
ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6, env_id="Atari")


def random_batch(spec: StepSpec, config: r2d2.R2D2Config, batch: int, seed: int) -> dict:
    """A [batch, L] sequence batch with every field and extra R2D2 reads (no padding)."""
    rng = np.random.default_rng(seed)
    L, H, A = config.sequence_length, config.lstm_size, spec.num_actions
    action = rng.integers(0, A, (batch, L)).astype(np.int32)
    reward = rng.normal(size=(batch, L)).astype(np.float32)
    flags = np.zeros((batch, L), bool)
    return {
        "observation": rng.integers(0, 256, (batch, L) + spec.observation.shape).astype(np.uint8),
        "action": action, "reward": reward, "discount": np.ones((batch, L), np.float32),
        "is_first": flags, "is_last": flags, "is_terminal": flags, "mask": ~flags,
        "weights": np.ones((batch,), np.float32),
        "extras": {
            "recurrent_state_h": np.zeros((batch, L, H), np.float32),
            "recurrent_state_c": np.zeros((batch, L, H), np.float32),
            "behaviour_prob": np.full((batch, L), 0.9, np.float32),
            "prev_action": np.roll(action, 1, axis=1), "prev_reward": np.roll(reward, 1, axis=1),
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--burn-in", type=int, default=40)
    p.add_argument("--trace", type=int, default=80)
    p.add_argument("--lstm", type=int, default=512)
    p.add_argument("--estimator", default="nstep")
    p.add_argument("--scan-unroll", type=int, nargs="+", default=[1],
                   help="R2D2Config.scan_unroll values to time in turn (the first is the baseline)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind})")
    baseline = None
    for unroll in a.scan_unroll:
        config = r2d2.R2D2Config(burn_in=a.burn_in, trace_length=a.trace, lstm_size=a.lstm,
                                 estimator=a.estimator, scan_unroll=unroll).validate()
        rate, warmup_s, loss = time_updates(config, a)
        baseline = baseline or rate
        print(f"batch: {a.batch} sequences x ({a.burn_in} burn-in + {a.trace} trace + 1) steps, LSTM {a.lstm}, "
              f"estimator {a.estimator}, scan_unroll {unroll}; compile + warm-up {warmup_s:.1f} s; loss {loss:.4f}")
        print(f"updates/s: {rate:.2f} ({rate * a.batch * a.trace:,.0f} trained steps/s); "
              f"ratio vs scan_unroll {a.scan_unroll[0]}: {rate / baseline:.3f}", flush=True)
    print(f"ratio vs paper ({PAPER_UPDATES_PER_S:g}/s), last setting: {rate / PAPER_UPDATES_PER_S:.3f}")


def time_updates(config: r2d2.R2D2Config, a) -> tuple[float, float, float]:
    """(updates/s over a.iters calls, compile + warm-up seconds, final loss) on one fixed batch."""
    state = r2d2.init(jax.random.PRNGKey(a.seed), ATARI, config)
    batch = jax.device_put(random_batch(ATARI, config, a.batch, a.seed))
    start = time.perf_counter()
    for _ in range(max(1, a.warmup)):  # the first call compiles
        state, metrics = r2d2.update(state, batch, config)
    jax.block_until_ready((state, metrics))
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(a.iters):
        state, metrics = r2d2.update(state, batch, config)
    jax.block_until_ready((state, metrics))
    return a.iters / (time.perf_counter() - start), warmup_s, float(metrics["loss"])


if __name__ == "__main__":
    main()
