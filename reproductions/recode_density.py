"""Does RECODE's cluster memory count visits? (`rillet reproduce recode-density`). A synthetic stream
over S distinct states (each state a fixed random vector, each visit that vector plus small Gaussian
noise), visited i.i.d. with Zipf frequencies, is fed through `actors/cluster_memory.py` in batches;
then, per state, the count of the atom nearest its centre and N(centre) are set against the number of
visits. Reports Spearman's rank correlation of each with the visit counts and writes
recode_density.json and recode_density.png (log-log). No environment, no training: seconds on CPU.

With count_decay gamma < 1 the counts forget: a state visited with probability p holds about
p / (1 - gamma) in steady state, which ranks states as their visit counts do; gamma = 1 counts
every visit.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rillet.reproductions.common import pyplot, save_figure, write_json


def zipf_stream(num_states: int, dim: int, steps: int, exponent: float, noise: float,
                seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres [S, D], visited state [T], embeddings [T, D]): state s (0-based) is visited with
    probability proportional to (s + 1)^-exponent; each embedding is its centre + N(0, noise^2)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_states, dim)).astype(np.float32)
    p = np.arange(1, num_states + 1, dtype=np.float64) ** -exponent
    states = rng.choice(num_states, size=steps, p=p / p.sum())
    embeddings = centres[states] + noise * rng.normal(size=(steps, dim)).astype(np.float32)
    return centres, states, embeddings.astype(np.float32)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of a and b [n] (ties get their average rank)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x), dtype=np.float64)
        _, group, size = np.unique(x, return_inverse=True, return_counts=True)
        return (np.bincount(group, weights=r) / size)[group]  # each tie group's mean rank

    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def feed(config, embeddings: np.ndarray, batch: int, seed: int):
    """The cluster memory after `embeddings` [T, D] in calls of `batch` (T a multiple of it)."""
    import jax.numpy as jnp

    from rillet.actors.cluster_memory import cluster_reward, init_cluster_memory

    state = init_cluster_memory(config, embeddings.shape[1], seed)
    for chunk in embeddings.reshape(-1, batch, embeddings.shape[1]):
        _, state = cluster_reward(state, jnp.asarray(chunk), config)
    return state


def estimated_counts(state, centres: np.ndarray, config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per centre [S]: the count of its nearest atom, N(centre), and that atom's index."""
    import jax
    import jax.numpy as jnp

    from rillet.actors.cluster_memory import cluster_count, squared_distances

    in_use = jnp.arange(state.capacity) < state.size

    def one(centre):
        dist = jnp.where(in_use, squared_distances(state.atoms, centre), jnp.inf)
        nearest = jnp.argmin(dist)
        n = cluster_count(dist, state.counts, in_use, state.dist_mean, config.kernel_epsilon)
        return state.counts[nearest], n, nearest

    atom_count, n, nearest = jax.lax.map(one, jnp.asarray(centres))
    return np.asarray(atom_count), np.asarray(n), np.asarray(nearest)


def density_figure(visits: np.ndarray, atom_count: np.ndarray, n: np.ndarray, expected: np.ndarray,
                   path: str, title: str) -> str:
    """Log-log scatter of both estimates against the visit counts, with the expected count line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    order = np.argsort(visits)
    ax.scatter(visits, np.maximum(atom_count, 1e-3), s=14, label="count of the nearest atom")
    ax.scatter(visits, np.maximum(n, 1e-3), s=14, marker="x", label="N(centre)")
    ax.plot(visits[order], expected[order], color="grey", linestyle="--", label="expected count of a state's atom")
    ax.set(xscale="log", yscale="log", xlabel="true visits", ylabel="estimated count")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def recode_density(out: str = "runs/recode-density", num_states: int = 100, dim: int = 32, steps: int = 20_000,
                   exponent: float = 1.0, noise: float = 0.05, capacity: int = 2_000, count_decay: float = 0.999,
                   insert_threshold: float | None = None, insert_probability: float | None = None,
                   batch: int = 16, seed: int = 0) -> dict:
    """Visit counts against the cluster memory's counts on a Zipf stream over fixed states.

    Args:
        out: the folder of recode_density.json and recode_density.png.
        num_states: S, the distinct states.
        dim: the embedding size D (state centres are standard normal vectors).
        steps: embeddings fed (rounded down to a multiple of batch).
        exponent: the Zipf exponent of the visit probabilities.
        noise: the standard deviation of the per-visit noise added to a state's centre.
        capacity: the memory's atoms (ClusterConfig.capacity; RECODE's Atari memory holds 50,000).
        count_decay: gamma (1: no forgetting).
        insert_threshold: kappa (default: ClusterConfig's).
        insert_probability: eta (default: ClusterConfig's).
        batch: embeddings per `cluster_reward` call.
        seed: the stream's and the memory's seed.
    """
    from rillet.actors.cluster_memory import ClusterConfig

    options = {"capacity": capacity, "count_decay": count_decay, "insert_threshold": insert_threshold,
               "insert_probability": insert_probability}
    config = ClusterConfig(**{k: v for k, v in options.items() if v is not None}).validate()
    steps -= steps % batch
    centres, states, embeddings = zipf_stream(num_states, dim, steps, exponent, noise, seed)
    state = feed(config, embeddings, batch, seed)
    atom_count, n, nearest = estimated_counts(state, centres, config)
    visits = np.bincount(states, minlength=num_states).astype(np.float64)
    rate = visits / steps
    expected = visits if count_decay == 1.0 else rate / (1.0 - count_decay) * (1.0 - count_decay ** steps)
    seen = visits > 0
    result = {
        "config": dataclasses.asdict(config),
        "stream": {"num_states": num_states, "dim": dim, "steps": steps, "exponent": exponent, "noise": noise,
                   "batch": batch, "seed": seed},
        "spearman_atom_count": spearman(visits[seen], atom_count[seen]),
        "spearman_n_centre": spearman(visits[seen], n[seen]),
        "states_visited": int(seen.sum()),
        "atoms_in_use": int(state.size),
        "states_sharing_their_nearest_atom": int(num_states - len(np.unique(nearest))),
        "dist_mean": float(state.dist_mean),
        "per_state": {"visits": visits.tolist(), "atom_count": atom_count.tolist(), "n_centre": n.tolist()},
    }
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "recode_density.json"), result)
    title = (f"RECODE counts, Zipf({exponent}) over {num_states} states, {steps} visits, gamma {count_decay}\n"
             f"Spearman: atom count {result['spearman_atom_count']:.3f}, N {result['spearman_n_centre']:.3f}")
    png = density_figure(visits, atom_count, n, expected, os.path.join(out, "recode_density.png"), title)
    print(f"{num_states} states ({result['states_visited']} visited), {steps} embeddings, {result['atoms_in_use']} "
          f"atoms in use, {result['states_sharing_their_nearest_atom']} states share their nearest atom")
    print(f"Spearman (visits vs count of the nearest atom): {result['spearman_atom_count']:.3f}")
    print(f"Spearman (visits vs N(centre)): {result['spearman_n_centre']:.3f}")
    print(f"figure: {png}")
    return result
