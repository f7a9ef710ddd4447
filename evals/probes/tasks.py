"""Synthetic sequence tasks for the probes: train the small decoder-only transformer on short lengths,
then measure accuracy against length (with or without separators, in float32 or bfloat16).

    count       tokens in {0, 1}, k <= max_count ones at random places; label: k ("how many 1s")
    copy_first  tokens in {0..3}; label: the first token
    copy_last   tokens in {0..3}; label: the last token

The answer is read from the output at the last (data) token. Token 4 is the separator; the model needs
vocab_size >= 5 and num_outputs >= max(max_count + 1, 4).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rillet.errors import ConfigError
from rillet.evals.probes.inputs import insert_separators
from rillet.learners.networks.attention import cast_floating
from rillet.learners.networks.transformer import DecoderTransformer, TransformerConfig
from rillet.learners.optim import adam, group_step, init_groups

__all__ = ["TASKS", "SEPARATOR", "task_batch", "task_config", "train_task", "accuracy_vs_length"]

TASKS = ("count", "copy_first", "copy_last")
SEPARATOR = 4


def _sequence(task: str, rng: np.random.Generator, n: int, max_count: int) -> tuple[np.ndarray, int]:
    if task == "count":
        k = int(rng.integers(0, min(max_count, n) + 1))
        x = np.zeros(n, np.int32)
        x[rng.choice(n, k, replace=False)] = 1
        return x, k
    x = rng.integers(0, 4, n).astype(np.int32)
    return x, int(x[0] if task == "copy_first" else x[-1])


def task_batch(task: str, rng: np.random.Generator, batch: int, lengths: tuple[int, int], separator_every: int = 0,
               max_count: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [B, W] int32 right-padded with 0, last [B] index of the last token, labels [B]); each
    sequence has a length drawn from lengths = (lo, hi) inclusive, separators inserted before padding."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {TASKS}.")
    lo, hi = lengths
    width = len(insert_separators(np.zeros(hi, np.int32), separator_every, SEPARATOR))
    tokens, last, labels = np.zeros((batch, width), np.int32), np.zeros(batch, np.int32), np.zeros(batch, np.int32)
    for b in range(batch):
        x, labels[b] = _sequence(task, rng, int(rng.integers(lo, hi + 1)), max_count)
        x = insert_separators(x, separator_every, SEPARATOR)
        tokens[b, :len(x)], last[b] = x, len(x) - 1
    return tokens, last, labels


def task_config(**overrides) -> TransformerConfig:
    """The small model the task results use (vocab 5: data 0..3 and the separator; 9 outputs)."""
    base = dict(vocab_size=5, d_model=64, num_heads=4, num_layers=2, num_outputs=9, positions="rotary")
    return TransformerConfig(**{**base, **overrides})


def _logits(model, tokens: jax.Array, last: jax.Array) -> jax.Array:
    """tokens [B, W], last [B] -> float32 logits [B, K] at each sequence's last token."""
    out = jax.vmap(lambda t: model(t).output)(tokens)
    return out[jnp.arange(tokens.shape[0]), last]


def _loss(modules, tokens, last, labels):
    logits = _logits(modules["net"], tokens, last)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (jnp.argmax(logits, -1) == labels).mean()


def train_task(task: str, config: TransformerConfig, steps: int = 1500, batch_size: int = 64,
               learning_rate: float = 1e-3, train_lengths: tuple[int, int] = (4, 16), separator_every: int = 0,
               seed: int = 0) -> tuple[DecoderTransformer, list[dict]]:
    """Adam on the cross-entropy of the label at the last token; returns (model, [{step, loss, acc}]
    every steps // 20 steps). Sequence lengths are drawn uniformly from train_lengths."""
    groups = {"net": adam(optax.cosine_decay_schedule(learning_rate, steps, 0.1), max_grad_norm=1.0)}
    modules = {"net": DecoderTransformer(config, jax.random.PRNGKey(seed))}
    opt_states = init_groups(groups, modules)
    step_fn = eqx.filter_jit(lambda m, o, *b: group_step(_loss, groups, m, o, *b)[:3])
    rng, history = np.random.default_rng(seed), []
    for step in range(steps):
        batch = task_batch(task, rng, batch_size, train_lengths, separator_every)
        modules, opt_states, (loss, acc) = step_fn(modules, opt_states, *map(jnp.asarray, batch))
        if (step + 1) % max(1, steps // 20) == 0:
            history.append({"step": step + 1, "loss": float(loss), "acc": float(acc)})
    return modules["net"], history


@eqx.filter_jit
def _correct(model, tokens, last, labels):
    return (jnp.argmax(_logits(model, tokens, last), -1) == labels).sum()


def accuracy_vs_length(model, task: str, lengths: Sequence[int], samples: int = 256, separator_every: int = 0,
                       dtype: str = "float32", seed: int = 1, batch_size: int = 64) -> list[float]:
    """Accuracy at each length in `lengths` on `samples` fresh sequences (rng seed `seed`), the model cast to
    `dtype` ("float32" or "bfloat16")."""
    model = cast_floating(model, {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype])
    rng, out = np.random.default_rng(seed), []
    for n in lengths:
        correct = 0
        for start in range(0, samples, batch_size):
            tokens, last, labels = task_batch(task, rng, min(batch_size, samples - start), (n, n), separator_every)
            correct += int(_correct(model, *map(jnp.asarray, (tokens, last, labels))))
        out.append(correct / samples)
    return out
