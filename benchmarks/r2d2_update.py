"""R2D2 learner throughput against the same update written in plain JAX: jitted `r2d2.update` calls per
second on the Atari conv-LSTM network (obs (4, 84, 84) uint8, 6 actions, Nature conv torso, LSTM with
the one-hot previous action and the previous reward as extra inputs, dueling head) with a fixed
device-resident batch of sequences of burn_in + trace + 1 steps (data loading, compilation and
warm-up excluded), and the baseline `plain_update` below (one `jax.jit` function, no rillet import
inside) doing the same math from the same initial parameters: stored-state burn-in, online and target
unrolls, n-step double-Q targets with value rescaling, the masked importance-weighted loss, sequence
priorities, global-norm clipping, Adam and the periodic target copy.

    .venv/bin/python benchmarks/r2d2_update.py                  # CPU default: 8 x (8 + 16), LSTM 512
    .venv/bin/python benchmarks/r2d2_update.py --paper          # paper setting: 64 x (40 + 80)
    .venv/bin/python benchmarks/r2d2_update.py --scan-unroll 1 8      # LSTM loop unrolling (both sides)

Runs alternate between rillet and the baseline (--rounds rounds of --iters updates each, the order
reversed every round). Prints the device, both matmul/conv FLOP counts per update from the jaxpr, the
largest differences after one update from the same state and a batch with episode ends and padding
(loss, priorities, every updated parameter), both updates/s by wall clock and by this process's CPU
time (the steadier measure on a machine shared with other jobs) and, last, the median ratio rillet /
baseline over the rounds (target >= 0.95): of the CPU-time rates on a CPU, of the wall-clock rates on an
accelerator (where the host mostly waits).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_common import interleaved_rates, max_abs_diff, max_rel_diff, median_ratio, step_flops
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.learners import r2d2

ATARI = StepSpec(ArraySpec((4, 84, 84), "uint8"), ArraySpec((), "int32"), num_actions=6, env_id="Atari")
RESCALE_EPS = 1e-3  # R2D2's h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x


def random_batch(spec: StepSpec, config: r2d2.R2D2Config, batch: int, seed: int, padded: bool = False) -> dict:
    """A [batch, L] sequence batch with every field and extra R2D2 reads; with `padded`, sequence 0
    ends an episode mid-trace (a new one starts after it) and sequence 1 is padding after its middle."""
    rng = np.random.default_rng(seed)
    L, H, A = config.sequence_length, config.lstm_size, spec.num_actions
    action = rng.integers(0, A, (batch, L)).astype(np.int32)
    reward = rng.normal(size=(batch, L)).astype(np.float32)
    discount, first, last = np.ones((batch, L), np.float32), np.zeros((batch, L), bool), np.zeros((batch, L), bool)
    mask = np.ones((batch, L), bool)
    if padded:
        mid = config.burn_in + config.trace_length // 2
        last[0, mid], discount[0, mid], first[0, mid + 1] = True, 0.0, True
        if batch > 1:
            last[1, mid], discount[1, mid], mask[1, mid + 1:] = True, 0.0, False
    prev_action, prev_reward = np.roll(action, 1, axis=1), np.roll(reward, 1, axis=1)
    prev_action[first], prev_reward[first] = 0, 0.0
    return {
        "observation": rng.integers(0, 256, (batch, L) + spec.observation.shape).astype(np.uint8),
        "action": action, "reward": reward, "discount": discount,
        "is_first": first, "is_last": last, "is_terminal": last, "mask": mask,
        "weights": rng.uniform(0.5, 1.0, (batch,)).astype(np.float32),
        "extras": {
            "recurrent_state_h": rng.normal(0, 0.1, (batch, L, H)).astype(np.float32),
            "recurrent_state_c": rng.normal(0, 0.1, (batch, L, H)).astype(np.float32),
            "behaviour_prob": np.full((batch, L), 0.9, np.float32),
            "prev_action": prev_action, "prev_reward": prev_reward,
        },
    }


# --------------------------------------------------------------------------- the plain-JAX baseline


def plain_params(net) -> dict:
    """A rillet RecurrentNetwork's arrays as a plain dict: conv weights [O, I, kh, kw], biases [O]; dense and
    head matrices [in, out] (x @ w); LSTM w_ih [4H, F'], w_hh [4H, H], bias [4H] (gates i, f, g, o) applied
    per example as w @ x, the faster orientation on CPU (x @ w.T: ~8% fewer updates/s)."""
    t, q = net.torso, net.heads["q"]
    return {"conv": [(c.weight, c.bias.reshape(-1)) for c in t.convs], "dense": (t.dense.weight.T, t.dense.bias),
            "lstm": (net.core.weight_ih, net.core.weight_hh, net.core.bias),
            "value": (q.value.weight.T, q.value.bias), "advantage": (q.advantage.weight.T, q.advantage.bias)}


def _torso(p, obs):
    """obs [N, 4, 84, 84] uint8 -> [N, 512]."""
    x = obs.astype(jnp.float32) / 255.0
    for (w, b), stride in zip(p["conv"], (4, 2, 1)):
        x = jax.lax.conv_general_dilated(x, w, (stride, stride), "VALID") + b[:, None, None]
        x = jax.nn.relu(x)
    w, b = p["dense"]
    return jax.nn.relu(x.reshape(x.shape[0], -1) @ w + b)


def _unroll(p, obs, prev_a, prev_r, first, h, c, num_actions, unroll):
    """Time-major obs [T, B, ...], prev_a, prev_r, first [T, B], state h, c [B, H] -> (Q [T, B, A], (h, c))."""
    T, B = first.shape
    x = _torso(p, obs.reshape((T * B,) + obs.shape[2:])).reshape(T, B, -1)
    x = jnp.concatenate([x, jax.nn.one_hot(prev_a, num_actions), prev_r[..., None]], axis=-1)
    w_ih, w_hh, bias = p["lstm"]

    def cell(carry, inp):
        h, c = carry
        xt, ft = inp
        h, c = jnp.where(ft[:, None], 0.0, h), jnp.where(ft[:, None], 0.0, c)
        gates = jax.vmap(lambda x1, h1: w_ih @ x1 + w_hh @ h1 + bias)(xt, h)  # per example: [4H, F'] @ [F']
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    (h, c), hs = jax.lax.scan(cell, (h, c), (x, first), unroll=unroll)
    (wv, bv), (wa, ba) = p["value"], p["advantage"]
    adv = hs @ wa + ba
    return hs @ wv + bv + adv - adv.mean(-1, keepdims=True), (h, c)


def _rescale(x):
    """h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x, as sign(x)|x| / (sqrt(|x| + 1) + 1) + eps x (no cancellation)."""
    return jnp.sign(x) * jnp.abs(x) / (jnp.sqrt(jnp.abs(x) + 1.0) + 1.0) + RESCALE_EPS * x


def _unrescale(x):
    """h^-1(x) = sign(x)(u^2 - 1), u = (sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps), with u - 1 written
    without cancellation as 2|x| / (sqrt(1 + 4 eps (|x| + 1 + eps)) + 1 + 2 eps)."""
    e = RESCALE_EPS
    u1 = 2.0 * jnp.abs(x) / (jnp.sqrt(1.0 + 4.0 * e * (jnp.abs(x) + 1.0 + e)) + 1.0 + 2.0 * e)
    return jnp.sign(x) * u1 * (u1 + 2.0)


def _nstep_targets(q_target, q_online, reward, discount, valid, n, gamma):
    """Double-Q n-step targets [B, T] in rescaled space: q_* [B, T+1, A], reward, discount, valid [B, T].
    The target of t sums discounted rewards up to t + n - 1 and bootstraps there, or earlier where the
    next transition is invalid or the trace ends."""
    B, T = reward.shape
    greedy = jnp.argmax(q_online[:, 1:], axis=-1)
    v = _unrescale(jnp.take_along_axis(q_target[:, 1:], greedy[..., None], axis=-1)[..., 0])  # [B, T]
    d = jnp.where(valid, gamma * discount, 0.0)
    r = jnp.where(valid, reward, 0.0)
    goes_on = jnp.concatenate([valid[:, 1:], jnp.zeros((B, 1), bool)], axis=1)  # t + 1 exists and is valid
    g, scale, alive = jnp.zeros((B, T)), jnp.ones((B, T)), jnp.ones((B, T), bool)
    for k in range(n):
        idx = jnp.minimum(jnp.arange(T) + k, T - 1)
        g = g + jnp.where(alive, scale * r[:, idx], 0.0)
        scale = scale * d[:, idx]
        stop = alive & ((k == n - 1) | ~goes_on[:, idx])
        g = g + jnp.where(stop, scale * v[:, idx], 0.0)
        alive = alive & ~stop
    return jnp.where(valid, _rescale(g), 0.0)


def _loss(p, target_p, batch, hp):
    """(loss [], (td [B, T], valid [B, T], q_taken [B, T])) of one batch, batch-major as R2D2 takes it."""
    bi, T, A = hp["burn_in"], hp["trace"], hp["num_actions"]
    tm = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    ex = batch["extras"]
    obs, first = tm(batch["observation"]), tm(batch["is_first"])
    pa, pr = tm(ex["prev_action"]), tm(ex["prev_reward"])
    h0, c0 = ex["recurrent_state_h"][:, 0], ex["recurrent_state_c"][:, 0]
    q_tgt, _ = _unroll(target_p, obs, pa, pr, first, h0, c0, A, hp["unroll"])
    _, state = _unroll(p, obs[:bi], pa[:bi], pr[:bi], first[:bi], h0, c0, A, hp["unroll"])  # burn-in
    q_on, _ = _unroll(p, obs[bi:], pa[bi:], pr[bi:], first[bi:], *jax.lax.stop_gradient(state), A, hp["unroll"])
    q_on, q_tgt = tm(q_on), jax.lax.stop_gradient(tm(q_tgt[bi:]))  # [B, T+1, A]
    step = slice(bi, bi + T)
    valid = batch["mask"][:, step] & ~batch["is_last"][:, step] & ~batch["is_first"][:, bi + 1:bi + T + 1]
    g = _nstep_targets(q_tgt, jax.lax.stop_gradient(q_on), batch["reward"][:, step], batch["discount"][:, step],
                       valid, hp["n_step"], hp["gamma"])
    q_taken = jnp.take_along_axis(q_on[:, :T], batch["action"][:, step, None], axis=-1)[..., 0]
    td = jnp.where(valid, jax.lax.stop_gradient(g) - q_taken, 0.0)
    count = jnp.maximum(valid.sum(-1), 1)
    loss = jnp.mean(batch["weights"] * jnp.sum(0.5 * td * td, -1) / count)
    return loss, (td, valid, q_taken)


def make_plain_update(config: r2d2.R2D2Config, num_actions: int):
    """The baseline: one jitted function (params, target, (mu, nu, count), steps, batch) -> (params, target,
    opt, steps, metrics) with metrics loss, mean_q, grad_norm, priorities [B], valid_steps."""
    hp = {"burn_in": config.burn_in, "trace": config.trace_length, "num_actions": num_actions,
          "unroll": config.scan_unroll, "n_step": config.n_step, "gamma": config.gamma}
    lr, eps, clip, eta = config.learning_rate, config.adam_eps, config.max_grad_norm, config.priority_eta
    b1, b2, period = 0.9, 0.999, config.target_update_period

    @jax.jit
    def plain_update(params, target, opt, steps, batch):
        (loss, (td, valid, q_taken)), grads = jax.value_and_grad(_loss, has_aux=True)(params, target, batch, hp)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        if clip is not None:
            grads = jax.tree.map(lambda g: jnp.where(norm < clip, g, g / norm * clip), grads)
        mu, nu, count = opt
        count = count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
        c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)
        params = jax.tree.map(lambda w, m, v: w - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, mu, nu)
        steps = steps + 1
        target = jax.tree.map(lambda o, t: jnp.where(steps % period == 0, o, t), params, target)
        abs_td, n = jnp.abs(td), jnp.maximum(valid.sum(-1), 1)
        metrics = {"loss": loss, "mean_q": jnp.sum(jnp.where(valid, q_taken, 0.0)) / jnp.maximum(valid.sum(), 1),
                   "grad_norm": norm, "valid_steps": valid.sum(),
                   "priorities": eta * abs_td.max(-1) + (1 - eta) * abs_td.sum(-1) / n}
        return params, target, (mu, nu, count), steps, metrics

    return plain_update


# --------------------------------------------------------------------------- comparison


def plain_state(state) -> tuple:
    """The baseline's (params, target, (mu, nu, count), steps) from a fresh rillet R2D2State."""
    params = plain_params(state.online)
    zeros = jax.tree.map(jnp.zeros_like, params)
    return params, plain_params(state.target), (zeros, zeros, jnp.zeros((), jnp.int32)), state.steps


def check_outputs(config, plain_update, seed: int, batch_size: int) -> str:
    """One update of each from the same state on a batch with an episode end and padding: max diffs."""
    state = r2d2.init(jax.random.PRNGKey(seed), ATARI, config)
    batch = jax.device_put(random_batch(ATARI, config, batch_size, seed + 1, padded=True))
    new_state, m = r2d2.update(state, batch, config)
    params, _, _, _, pm = plain_update(*plain_state(state), batch)
    return (f"loss {float(m['loss']):.6f} vs {float(pm['loss']):.6f} (rel diff "
            f"{abs(float(m['loss']) / float(pm['loss']) - 1):.1e}); priorities max rel diff "
            f"{max_rel_diff(m['priorities'], pm['priorities'], 1e-3):.1e}; grad_norm rel diff "
            f"{abs(float(m['grad_norm']) / float(pm['grad_norm']) - 1):.1e}; updated params max abs diff "
            f"{max_abs_diff(plain_params(new_state.online), params):.1e} (one Adam step moves each by ~"
            f"{config.learning_rate:g})")


def compare(config, a) -> float:
    """Prints FLOPs, the output check and both rates for one config; returns the median ratio."""
    plain_update = make_plain_update(config, ATARI.num_actions)
    state = r2d2.init(jax.random.PRNGKey(a.seed), ATARI, config)
    batch = jax.device_put(random_batch(ATARI, config, a.batch, a.seed))
    pstate = plain_state(state)
    f_rillet = step_flops(lambda s, b: r2d2.update(s, b, config), state, batch)
    f_plain = step_flops(plain_update, *pstate, batch)
    print(f"FLOPs/update (matmul + conv, from the jaxpr): rillet {f_rillet / 1e9:.3f} G, baseline "
          f"{f_plain / 1e9:.3f} G (ratio {f_rillet / f_plain:.4f})")
    print("same outputs, one update:", check_outputs(config, plain_update, a.seed, a.batch), flush=True)
    steps = {"rillet": lambda s: r2d2.update(s, batch, config)[0],
             "baseline": lambda s: plain_update(*s, batch)[:4]}
    states = {"rillet": state, "baseline": pstate}
    t0 = time.perf_counter()
    for name, fn in steps.items():
        for _ in range(max(1, a.warmup)):  # the first call compiles
            states[name] = fn(states[name])
    jax.block_until_ready(states)
    print(f"compile + warm-up of both: {time.perf_counter() - t0:.1f} s", flush=True)
    rates = interleaved_rates(steps, states, a.iters, a.rounds)
    for clock, per in rates.items():
        for name, r in per.items():
            print(f"{name:>8}: {statistics.median(r):7.2f} updates/s ({clock}; median of {a.rounds} rounds of "
                  f"{a.iters}: {', '.join(f'{x:.2f}' for x in r)})")
        print(f"ratio rillet / baseline ({clock}): {median_ratio(per, 'rillet', 'baseline'):.3f} (median over "
              "rounds of " + ", ".join(f"{x / y:.2f}" for x, y in zip(per["rillet"], per["baseline"])) + ")")
    return median_ratio(rates["cpu" if jax.devices()[0].platform == "cpu" else "wall"], "rillet", "baseline")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--paper", action="store_true", help="the paper's sizes: --batch 64 --burn-in 40 --trace 80")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--burn-in", type=int, default=8)
    p.add_argument("--trace", type=int, default=16)
    p.add_argument("--lstm", type=int, default=512)
    p.add_argument("--scan-unroll", type=int, nargs="+", default=[1],
                   help="R2D2Config.scan_unroll values to compare in turn (the baseline uses the same)")
    p.add_argument("--iters", type=int, default=2, help="updates per timed round")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per side, alternating")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.paper:
        a.batch, a.burn_in, a.trace = 64, 40, 80
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}")
    for unroll in a.scan_unroll:
        config = r2d2.R2D2Config(burn_in=a.burn_in, trace_length=a.trace, lstm_size=a.lstm,
                                 scan_unroll=unroll).validate()
        print(f"batch: {a.batch} sequences x ({a.burn_in} burn-in + {a.trace} trace + 1) steps, LSTM {a.lstm}, "
              f"nstep (n = {config.n_step}), scan_unroll {unroll}")
        ratio = compare(config, a)
        clock = "process CPU time" if device.platform == "cpu" else "wall clock"
        print(f"ratio rillet / baseline (scan_unroll {unroll}, {clock}): {ratio:.3f} (target >= 0.95)", flush=True)


if __name__ == "__main__":
    main()
