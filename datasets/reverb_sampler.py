"""Sampling batches from a Reverb table for a learner, priority updates, signature checks.

`sample_batches` yields numpy pytrees (no TensorFlow types reach the learner)::

    {"data": item pytree with a leading [B] axis (see rillet.datasets.reverb_tables),
     "key": uint64 [B] item keys (for update_priorities),
     "probability": float64 [B] sampling probabilities at sample time}
"""

from __future__ import annotations

import numbers
from typing import Any, Iterator, Sequence

import numpy as np
import reverb
import tensorflow as tf
import tree

from rillet.datasets.reverb_writer import as_client
from rillet.errors import ConfigError, SpecMismatchError


def sample_batches(
    server_address: str,
    table: str,
    batch_size: int,
    *,
    prefetch: int = 2,
    num_workers_per_iterator: int = -1,
    max_in_flight_samples_per_worker: int | None = None,
    rate_limiter_timeout_ms: int = -1,
) -> Iterator[dict[str, Any]]:
    """Endless iterator of sampled batches (see module docstring), shaped by the table signature.

    max_in_flight_samples_per_worker: defaults to 2 * batch_size.
    rate_limiter_timeout_ms: -1 blocks while the rate limiter forbids sampling; a value >= 0
      ends the iterator once no sample arrived for that long (useful for draining a queue).
    num_workers_per_iterator: -1 lets Reverb choose; use 1 for FIFO (queue) tables.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if prefetch < 0:
        raise ConfigError(f"prefetch must be >= 0 (0 disables prefetching), got {prefetch!r}.")
    _signature_of(as_client(server_address), table)  # clear errors before TF's
    in_flight = max_in_flight_samples_per_worker or 2 * batch_size
    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=server_address,
        table=table,
        max_in_flight_samples_per_worker=int(in_flight),
        num_workers_per_iterator=num_workers_per_iterator,
        rate_limiter_timeout_ms=rate_limiter_timeout_ms,
    )
    dataset = dataset.map(
        lambda s: {
            "data": s.data,
            "key": s.info.key,
            "probability": tf.cast(s.info.probability, tf.float64),
        }
    )
    dataset = dataset.batch(int(batch_size), drop_remainder=True)
    if prefetch:
        dataset = dataset.prefetch(prefetch)
    return dataset.as_numpy_iterator()


def update_priorities(
    client_or_address: reverb.Client | str,
    table: str,
    keys: Sequence[int] | np.ndarray,
    priorities: Sequence[float] | np.ndarray,
) -> None:
    """Sets new priorities for sampled items (unknown keys, e.g. already evicted, are ignored)."""
    keys = np.asarray(keys).reshape(-1)
    priorities = np.asarray(priorities, np.float64).reshape(-1)
    if keys.shape != priorities.shape:
        raise SpecMismatchError(
            f"update_priorities got {keys.size} keys but {priorities.size} priorities; pass one "
            "priority per sampled key (batch['key'])."
        )
    if not np.all(np.isfinite(priorities)) or np.any(priorities < 0):
        raise SpecMismatchError(
            "update_priorities: priorities must be finite and >= 0 (e.g. |TD error| + eps); got "
            f"{priorities[~np.isfinite(priorities) | (priorities < 0)][:5]}."
        )
    # Duplicate keys in one batch: the last priority wins.
    updates = {int(k): float(p) for k, p in zip(keys.astype(np.uint64), priorities)}
    as_client(client_or_address).mutate_priorities(table, updates=updates)


def _signature_of(client: reverb.Client, table: str) -> Any:
    info = client.server_info()
    if table not in info:
        raise ConfigError(
            f"the Reverb server has no table named {table!r}; it has {sorted(info)}. Check the "
            "table name in the actor and learner configs."
        )
    signature = info[table].signature
    if not signature:
        raise SpecMismatchError(
            f"Reverb table {table!r} has no signature; create it with "
            "rillet.datasets.reverb_tables.make_table(name, signature, ...)."
        )
    return signature


def _flat(signature: Any) -> dict[str, tuple[tuple | None, str]]:
    out = {}
    for path, spec in tree.flatten_with_path(signature):
        shape = tf.TensorShape(spec.shape)
        out["/".join(str(p) for p in path)] = (
            tuple(shape.as_list()) if shape.rank is not None else None,
            tf.as_dtype(spec.dtype).name,
        )
    return out


def check_table_matches(server_address: reverb.Client | str, table: str, expected_signature: Any) -> None:
    """Raises SpecMismatchError if `table`'s signature differs from `expected_signature`.

    Compares field paths, shapes and dtypes (TensorSpec names are ignored).
    """
    have = _flat(_signature_of(as_client(server_address), table))
    want = _flat(expected_signature)
    problems = []
    for path in sorted(set(have) | set(want)):
        if path not in have:
            problems.append(f"'{path}' missing from the table (expected {want[path][0]} {want[path][1]})")
        elif path not in want:
            problems.append(f"'{path}' is in the table but not expected ({have[path][0]} {have[path][1]})")
        elif have[path] != want[path]:
            problems.append(
                f"'{path}': table has {have[path][0]} {have[path][1]}, expected {want[path][0]} {want[path][1]}"
            )
    if problems:
        raise SpecMismatchError(
            f"Reverb table {table!r} does not hold the items this learner expects: "
            + "; ".join(problems)
            + ". Recreate the table (restart the replay server) for this environment and agent, "
            "or run the agent that matches the table."
        )
