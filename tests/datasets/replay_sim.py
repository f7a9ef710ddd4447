"""Test helper: simulates an EnvPool actor's batched RLDS steps with auto-reset, plus
slow loop-based references of the items the Reverb writers must produce."""

from __future__ import annotations

import numpy as np

from rillet.datasets.specs import ArraySpec, StepSpec

SPEC = StepSpec(
    observation=ArraySpec((3,), "float32"),
    action=ArraySpec((), "int32"),
    num_actions=5,
    extras={"h": ArraySpec((2,), "float32")},
)


def make_episode(env: int, index: int, length: int, terminated: bool, rng, spec=SPEC) -> dict:
    """One RLDS episode with steps 0..T (T = length). observation[:3] = (env, episode, t)."""
    T = length
    obs = _random(rng, (T + 1,), spec.observation)
    if spec.observation.shape == (3,):
        obs[:, 0], obs[:, 1], obs[:, 2] = env, index, np.arange(T + 1)
    if spec.action.shape == ():
        action = (1000 * env + 100 * index + np.arange(T + 1)).astype(spec.action.dtype)
    else:
        action = _random(rng, (T + 1,), spec.action)
    reward = rng.normal(size=T + 1).astype(np.float32)
    discount = np.ones(T + 1, np.float32)
    reward[T] = discount[T] = 0.0
    if T >= 1 and terminated:
        discount[T - 1] = 0.0
    flags = np.zeros(T + 1, bool)
    return {
        "observation": obs,
        "action": action,
        "reward": reward,
        "discount": discount,
        "is_first": np.r_[True, flags[1:]],
        "is_last": np.r_[flags[:-1], True],
        "is_terminal": np.r_[flags[:-1], terminated],
        "extras": {k: _random(rng, (T + 1,), s) for k, s in spec.extras.items()},
    }


def _random(rng, leading, spec):
    if spec.np_dtype.kind in "iu":
        return rng.integers(0, 100, size=leading + spec.shape).astype(spec.dtype)
    return rng.normal(size=leading + spec.shape).astype(spec.dtype)


def simulate(lengths, terminated, num_ticks, seed=0, spec=SPEC):
    """Batched ticks of B envs; env i plays episodes of lengths[i][e] back to back (auto-reset).

    Returns (ticks, episodes): ticks is a list of batched step dicts ([B, ...] arrays);
    episodes[i] is a list of (episode dict, steps seen) with steps seen <= T + 1.
    """
    rng = np.random.default_rng(seed)
    B = len(lengths)
    streams, episodes = [], []
    for i in range(B):
        eps = [make_episode(i, e, T, term, rng, spec) for e, (T, term) in enumerate(zip(lengths[i], terminated[i]))]
        total = sum(len(ep["reward"]) for ep in eps)
        assert total >= num_ticks, "simulate: not enough episode steps for num_ticks"
        steps, seen, left = [], [], num_ticks
        for ep in eps:
            k = min(left, len(ep["reward"]))
            if k == 0:
                break
            steps.extend(_step(ep, t) for t in range(k))
            seen.append((ep, k))
            left -= k
        streams.append(steps)
        episodes.append(seen)
    ticks = [_stack([streams[i][k] for i in range(B)]) for k in range(num_ticks)]
    return ticks, episodes


def _step(ep, t):
    return {k: ({n: v[t] for n, v in ep[k].items()} if k == "extras" else ep[k][t]) for k in ep}


def _stack(steps):
    out = {k: np.stack([s[k] for s in steps]) for k in steps[0] if k != "extras"}
    out["extras"] = {n: np.stack([s["extras"][n] for s in steps]) for n in steps[0]["extras"]}
    return out


def reference_transitions(episodes, n, gamma):
    """Slow reference: {(env, episode, t): transition} for every transition that must exist."""
    out = {}
    for i, seen in enumerate(episodes):
        for e, (ep, k) in enumerate(seen):
            T = len(ep["reward"]) - 1
            complete = k == T + 1
            for t in range(T):
                m = min(n, T - t)
                if not complete and t + m > k - 1:
                    continue  # its bootstrap step was never observed
                ret, disc = 0.0, 1.0
                for j in range(m):
                    ret += disc * float(ep["reward"][t + j])
                    disc *= gamma * float(ep["discount"][t + j])
                out[(i, e, t)] = {
                    "observation": ep["observation"][t],
                    "action": ep["action"][t],
                    "reward": ret,
                    "discount": disc,
                    "next_observation": ep["observation"][t + m],
                    "extras": {name: v[t] for name, v in ep["extras"].items()},
                }
    return out


def reference_sequences(episodes, length, period, spec=SPEC):
    """Slow reference: {(env, episode, start): sequence} with zero padding and mask."""
    out = {}
    for i, seen in enumerate(episodes):
        for e, (ep, k) in enumerate(seen):
            T = len(ep["reward"]) - 1
            complete = k == T + 1
            for s in range(0, T, period):
                if not complete and s + length - 1 > k - 1:
                    continue
                real = [j for j in range(s, s + length) if j <= T]
                pad = length - len(real)
                seq = {}
                for name in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
                    arr = ep[name][real]
                    seq[name] = np.concatenate([arr, np.zeros((pad,) + arr.shape[1:], arr.dtype)])
                seq["extras"] = {
                    n: np.concatenate([v[real], np.zeros((pad,) + v.shape[1:], v.dtype)]) for n, v in ep["extras"].items()
                }
                seq["mask"] = np.arange(length) < len(real)
                out[(i, e, s)] = seq
    return out


def drain(client, table, count):
    """Reads `count` items from a queue table (insertion order) as signature-shaped pytrees."""
    if count == 0:
        return []
    return [
        s.data for s in client.sample(table, num_samples=count, emit_timesteps=False, unpack_as_table_signature=True)
    ]
