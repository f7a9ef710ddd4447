"""Cluster memory (RECODE's long-term novelty; Saade et al., 2023, "Unlocking the Power of
Representations in Long-term Novelty-based Exploration").

One memory of M atoms f_l (cluster centres in embedding space) with decaying visit counts c_l, never
reset and shared by every actor. An embedding e = f(x_t) is rewarded by the counts of the atoms near
it, then folded into the memory:

    K(f, e) = eps / (eps + ||e - f||^2 / d_m^2) * 1{||e - f||^2 < d_m^2}
    N(e)    = sum_l (1 + c_l) K(f_l, e)        over every atom in use
    r       = 1 / (sqrt(N(e)) + c)            then divided by the running std of r

    d_m^2  <- (1 - tau) d_m^2 + tau * mean of ||e - f||^2 over e's k nearest atoms
    c      <- gamma * c                        (every count, once per embedding)
    i       = e's nearest atom
    if ||f_i - e||^2 > kappa d_m^2 and u < eta (u ~ U[0, 1)):  e becomes an atom with count 1, in a
            free slot while one is free, else in place of an atom j drawn with probability
            proportional to 1 / c_j^2, whose count first moves to j's nearest other atom
    else:   f_i <- (c_i f_i + e) / (c_i + 1);  c_i <- c_i + 1

Decisions where the paper's summary (PAPERS.md, RECODE) leaves a choice:

- Order. For each embedding: d_m^2 is updated first (e's k nearest atoms; as NGU's episodic reward
  does), then the reward reads N(e) from the atoms and counts as they were before e, then the counts
  decay and e is inserted or merged. A state is thus rewarded as novel on its first visit.
- N(e) sums over all atoms in use, as the equation's sum over l says: the indicator already keeps
  only atoms within d_m^2 (about the k-nearest radius), the distances to every atom are computed
  anyway for the k nearest, so the sum costs O(M) more and needs no second selection.
- d_m^2 averages over min(k, #atoms) neighbours while fewer than k atoms exist. It starts as a
  plain running mean (the first update sets it, the n-th has weight 1/n) until 1/n < tau, then
  becomes the exponential average; with no atom yet it is 0 and not updated. The kernel divides by
  max(d_m^2, tiny), so with d_m^2 = 0 an exact repeat has K = 1 and anything else K = 0.
- Empty memory: N(e) = 0, so r = 1/c (the most novel value), and e is inserted whatever u is (there
  is no atom to merge into).
- Normalisation: r is divided by max(std, reward_std_floor), the std of the raw rewards so far (this
  one included; the last `reward_window` weigh); before two rewards exist there is no spread, and
  the scale is max(|r|, floor) (the first normalised reward is 1).

Use: ``state = init_cluster_memory(config, D, key)``, then each tick
``rewards, state = cluster_reward(state, embeddings, config)`` for the tick's B embeddings, taken
in order (a lax.scan, equal to feeding them one at a time). `cluster_reward` donates the state so
that the [M, D] atoms are updated in place; use only the returned state. Memory: M * (D + 1) * 4
bytes (50,000 x 33 x 4 = 6.6 MB) plus scalars; each embedding reads every atom once (twice when it
replaces one).
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp

from rillet import validation as check
from rillet.errors import SpecMismatchError
from rillet.learners.running_stats import RunningStats, update_stats

__all__ = ["ClusterConfig", "ClusterMemory", "init_cluster_memory", "cluster_reward", "memory_step",
           "squared_distances", "k_nearest", "kernel", "cluster_count", "novelty_reward", "update_dist_mean",
           "normalise_reward", "merge_atom", "choose_replaced", "nearest_other", "memory_fields",
           "memory_from_fields"]

_TINY = float(jnp.finfo(jnp.float32).tiny)  # floor of d_m^2 and of counts in the 1/c^2 draw


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """RECODE's constants. Sources: capacity (5e4 atoms, Atari) and count_decay (gamma = 0.999) are
    from the paper (PAPERS.md). num_neighbours (k = 10), kernel_epsilon (1e-4) and
    pseudo_count_constant (c = 1e-3) are NGU's (Badia et al., 2020, appendix table), unverified for
    RECODE. insert_threshold (kappa), insert_probability (eta), distance_rate (tau), reward_window
    and reward_std_floor are this library's choices, unverified. kappa was chosen on the
    `recode-density` check (100 states, D = 32): d_m^2 averages over k neighbours, most of them
    other states, so kappa = 1 merges new states into old atoms (4 atoms for 100 states) while
    kappa <= 0.3 gives each state its own atom; eta = 0.1 and 1 did alike there.
    reward_window: the old reward statistics weigh as at most this many rewards (None: all alike).
    """

    capacity: int = 50_000
    num_neighbours: int = 10
    kernel_epsilon: float = 1e-4
    pseudo_count_constant: float = 1e-3
    count_decay: float = 0.999
    insert_threshold: float = 0.3
    insert_probability: float = 0.1
    distance_rate: float = 0.01
    reward_window: int | None = 100_000
    reward_std_floor: float = 1e-3

    def validate(self) -> "ClusterConfig":
        """Raises ConfigError naming the first bad field; returns self."""
        owner = "ClusterConfig"
        check.integer(owner, "capacity", self.capacity, low=1, fix="capacity (e.g. 50000)")
        check.integer(owner, "num_neighbours", self.num_neighbours, low=1, fix="num_neighbours (e.g. 10)")
        for name, example in (("kernel_epsilon", "1e-4"), ("pseudo_count_constant", "1e-3"),
                              ("insert_threshold", "0.3"), ("reward_std_floor", "1e-3")):
            check.number(owner, name, getattr(self, name), 0.0, low_open=True, fix=f"{name} (e.g. {example})")
        check.number(owner, "count_decay", self.count_decay, 0.0, 1.0, low_open=True,
                     fix="count_decay (e.g. 0.999)")
        check.number(owner, "insert_probability", self.insert_probability, 0.0, 1.0, low_open=True,
                     fix="insert_probability (e.g. 0.1)")
        check.number(owner, "distance_rate", self.distance_rate, 0.0, 1.0, low_open=True,
                     fix="distance_rate (e.g. 0.01)")
        if self.reward_window is not None:
            check.integer(owner, "reward_window", self.reward_window, low=1, fix="reward_window (e.g. 100000, or None)")
        return self


class ClusterMemory(eqx.Module):
    """The memory of M atoms of size D (a pytree: jittable, checkpointable).

    atoms [M, D] float32 (slots [0, size) hold atoms); counts [M] float32 (0 in free slots);
    size [] int32; dist_mean [] float32 (d_m^2) and dist_count [] float32 (its updates so far, for
    the warm-up); steps [] int32 (embeddings seen); reward_stats: RunningStats of the raw rewards;
    key [2] uint32 (PRNG key data, split once per embedding).
    """

    atoms: jax.Array
    counts: jax.Array
    size: jax.Array
    dist_mean: jax.Array
    dist_count: jax.Array
    steps: jax.Array
    reward_stats: RunningStats
    key: jax.Array

    @property
    def capacity(self) -> int:
        """M, the most atoms the memory holds."""
        return self.atoms.shape[0]


def init_cluster_memory(config: ClusterConfig, embedding_size: int, key) -> ClusterMemory:
    """An empty memory of config.capacity atoms of size `embedding_size`; key: a PRNG key (raw
    uint32 [2] or typed) or an int seed."""
    config.validate()
    check.integer("init_cluster_memory", "embedding_size", embedding_size, low=1)
    if isinstance(key, int):
        key = jax.random.PRNGKey(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    scalar = functools.partial(jnp.zeros, ())  # one buffer per field: each is donated on its own
    return ClusterMemory(jnp.zeros((config.capacity, embedding_size), jnp.float32),
                         jnp.zeros(config.capacity, jnp.float32), scalar(jnp.int32), scalar(jnp.float32),
                         scalar(jnp.float32), scalar(jnp.int32),
                         RunningStats(scalar(jnp.float32), scalar(jnp.float32), scalar(jnp.float32)),
                         jnp.array(key, jnp.uint32))


def memory_fields(memory: ClusterMemory) -> dict:
    """The memory as a dict of its fields by name (reward_stats a dict too): what a checkpoint stores."""
    return dataclasses.asdict(memory)


def memory_from_fields(saved, like: ClusterMemory) -> ClusterMemory:
    """A memory from `memory_fields` output (e.g. read back from a checkpoint), with like's dtypes.
    Raises SpecMismatchError unless saved has like's fields and shapes."""
    try:
        fields = {f.name: jnp.asarray(saved[f.name], getattr(like, f.name).dtype)
                  for f in dataclasses.fields(like) if f.name != "reward_stats"}
        stats = RunningStats(**{k: jnp.asarray(saved["reward_stats"][k], jnp.float32)
                                for k in ("count", "mean", "var")})
    except (KeyError, TypeError) as e:
        raise SpecMismatchError(f"not a saved cluster memory (missing {e}); restore what memory_fields made.") from e
    memory = ClusterMemory(**fields, reward_stats=stats)
    ours, theirs = jax.tree.map(jnp.shape, like), jax.tree.map(jnp.shape, memory)
    if ours != theirs:
        raise SpecMismatchError(f"saved cluster memory has shapes {theirs}, this one {ours}: restore a checkpoint "
                                "made with the same capacity and embedding size.")
    return memory


def squared_distances(atoms: jax.Array, embedding: jax.Array) -> jax.Array:
    """||f_l - e||^2 [M] of every row of atoms [M, D] to embedding [D] (differences, not the
    expanded dot product, so that near-equal vectors keep their precision)."""
    return jnp.sum(jnp.square(atoms - embedding[None, :]), axis=-1)


def k_nearest(sq_dist: jax.Array, k: int, block: int = 128) -> tuple[jax.Array, jax.Array]:
    """The k smallest of sq_dist [M] ascending [k] and their indices [k] (k <= M; +inf entries,
    free slots, come last). Exact, in O(M): the k smallest lie in the k blocks (of `block` entries)
    whose minima are smallest, so only block minima and k blocks are ranked. A lax.top_k over all M
    would be lowered on CPU to a full sort (O(M log M)) unless XLA's rewrite to its TopK kernel
    happens to match."""
    m = sq_dist.shape[0]
    groups = -(-m // block)
    blocks = jnp.pad(sq_dist, (0, groups * block - m), constant_values=jnp.inf).reshape(groups, block)
    _, which = jax.lax.top_k(-jnp.min(blocks, axis=1), min(k, groups))
    neg, order = jax.lax.top_k(-blocks[which].reshape(-1), k)
    index = (which[:, None] * block + jnp.arange(block)[None, :]).reshape(-1)[order]
    return -neg, index


def kernel(sq_dist: jax.Array, dist_mean: jax.Array, epsilon: float) -> jax.Array:
    """K = eps / (eps + d / d_m^2) * 1{d < d_m^2} of squared distances d [...] (d_m^2 floored at
    the smallest float32, so an exact repeat has K = 1 when d_m^2 is 0)."""
    scale = jnp.maximum(dist_mean, _TINY)
    return jnp.where(sq_dist < scale, epsilon / (epsilon + sq_dist / scale), 0.0)


def cluster_count(sq_dist: jax.Array, counts: jax.Array, in_use: jax.Array, dist_mean: jax.Array,
                  epsilon: float) -> jax.Array:
    """N(e) = sum over atoms in use (in_use [M] bool) of (1 + c_l) K(f_l, e) -> [], from e's
    squared distances sq_dist [M] and counts [M]."""
    return jnp.sum(jnp.where(in_use, (1.0 + counts) * kernel(sq_dist, dist_mean, epsilon), 0.0))


def novelty_reward(count: jax.Array, constant: float) -> jax.Array:
    """r = 1 / (sqrt(N) + c) of counts N [...]."""
    return 1.0 / (jnp.sqrt(count) + constant)


def update_dist_mean(dist_mean: jax.Array, dist_count: jax.Array, neighbour_dist: jax.Array,
                     valid: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    """(d_m^2, updates) after one embedding: neighbour_dist [k] squared distances to its nearest
    atoms, the first valid [k] of them real. d_m^2 moves to their mean with weight max(rate, 1/n)
    (n: this update's number), so it starts as a plain mean; no valid distance: both unchanged."""
    n = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, neighbour_dist, 0.0)) / jnp.maximum(n, 1).astype(jnp.float32)
    updates = dist_count + 1.0
    weight = jnp.maximum(rate, 1.0 / updates)
    moved = dist_mean + weight * (mean - dist_mean)
    return jnp.where(n > 0, moved, dist_mean), jnp.where(n > 0, updates, dist_count)


def normalise_reward(stats: RunningStats, reward: jax.Array, config: ClusterConfig) -> tuple[jax.Array, RunningStats]:
    """(reward / scale, statistics with `reward` [] added): scale = max(running std, floor), or
    max(|reward|, floor) while fewer than two rewards have been seen (no spread yet)."""
    stats = update_stats(stats, reward[None], jnp.ones(1, bool), max_count=config.reward_window)
    std = jnp.where(stats.count >= 2, jnp.sqrt(stats.var), jnp.abs(reward))
    return reward / jnp.maximum(std, config.reward_std_floor), stats


def merge_atom(atom: jax.Array, count: jax.Array, embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
    """An atom [D] with count [] absorbing embedding [D]: ((c f + e) / (c + 1), c + 1)."""
    return (count * atom + embedding) / (count + 1.0), count + 1.0


def choose_replaced(counts: jax.Array, in_use: jax.Array, key: jax.Array) -> jax.Array:
    """An atom index [] drawn among those in use (in_use [M] bool) with probability proportional to
    1 / c_j^2 (counts [M] floored at the smallest float32; drawn in log space, so that tiny counts
    do not overflow)."""
    logits = -2.0 * jnp.log(jnp.maximum(counts, _TINY))
    return jax.random.categorical(key, jnp.where(in_use, logits, -jnp.inf))


def nearest_other(atoms: jax.Array, in_use: jax.Array, j: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(index [], whether it exists []) of atom j's nearest other atom in use, of atoms [M, D]."""
    others = in_use & (jnp.arange(atoms.shape[0]) != j)
    dist = jnp.where(others, squared_distances(atoms, atoms[j]), jnp.inf)
    return jnp.argmin(dist), jnp.any(others)


def _replacement(atoms: jax.Array, counts: jax.Array, in_use: jax.Array, key: jax.Array):
    """(j, heir, count moved to heir) of a replacement in a full memory: j ~ 1 / c_j^2, its nearest
    other atom inherits c_j (nothing when there is none, M = 1)."""
    j = choose_replaced(counts, in_use, key)
    heir, exists = nearest_other(atoms, in_use, j)
    return j, heir, jnp.where(exists, counts[j], 0.0)


def memory_step(state: ClusterMemory, embedding: jax.Array, config: ClusterConfig) -> tuple[jax.Array, ClusterMemory]:
    """One embedding [D]: (its raw reward r [], the memory after it), in the module docstring's
    order. Pure; `cluster_reward` scans it over a batch and normalises r. The atoms are written
    once (one row, wherever it goes), so that XLA updates them in place; the replaced atom and its
    heir are searched (two more O(M) passes) only when e replaces an atom."""
    m = state.atoms.shape[0]
    k = min(config.num_neighbours, m)
    key, u_key, draw_key = jax.random.split(state.key, 3)
    in_use = jnp.arange(m) < state.size
    dist = jnp.where(in_use, squared_distances(state.atoms, embedding), jnp.inf)
    near_dist, nearest = k_nearest(dist, k)
    dist_mean, dist_count = update_dist_mean(state.dist_mean, state.dist_count, near_dist,
                                             jnp.arange(k) < state.size, config.distance_rate)
    count = cluster_count(dist, state.counts, in_use, dist_mean, config.kernel_epsilon)
    reward = novelty_reward(count, config.pseudo_count_constant)

    counts = state.counts * config.count_decay
    far = near_dist[0] > config.insert_threshold * dist_mean
    insert = (state.size == 0) | (far & (jax.random.uniform(u_key) < config.insert_probability))
    replace = insert & (state.size == m)
    j, heir, moved = jax.lax.cond(replace, _replacement, lambda *_: (0, 0, 0.0),
                                  state.atoms, counts, in_use, draw_key)
    i = nearest[0]
    merged_atom, merged_count = merge_atom(state.atoms[i], counts[i], embedding)
    slot = jnp.where(insert, jnp.where(replace, j, state.size), i)
    row = jnp.where(insert, embedding, merged_atom)
    atoms = jax.lax.dynamic_update_slice(state.atoms, row[None], (slot, 0))
    counts = counts.at[heir].add(moved).at[slot].set(jnp.where(insert, 1.0, merged_count))
    size = jnp.minimum(state.size + insert.astype(jnp.int32), m)
    return reward, dataclasses.replace(state, atoms=atoms, counts=counts, size=size, dist_mean=dist_mean,
                                       dist_count=dist_count, steps=state.steps + 1, key=key)


@functools.partial(jax.jit, static_argnames="config", donate_argnames="state")
def cluster_reward(state: ClusterMemory, embeddings: jax.Array,
                   config: ClusterConfig) -> tuple[jax.Array, ClusterMemory]:
    """Normalised novelty rewards [B] float32 of embeddings [B, D], taken in order, and the memory
    after all of them: equal to B calls with one embedding each. `config` is static (hashable).

    `state` is donated: its buffers are reused for the returned memory, so that each embedding's
    write is O(D) rather than a copy of the atoms; use only the returned memory afterwards.
    """

    def one(memory: ClusterMemory, embedding: jax.Array):
        raw, memory = memory_step(memory, embedding, config)
        reward, stats = normalise_reward(memory.reward_stats, raw, config)
        return dataclasses.replace(memory, reward_stats=stats), reward

    state, rewards = jax.lax.scan(one, state, jnp.asarray(embeddings, jnp.float32))
    return rewards, state
