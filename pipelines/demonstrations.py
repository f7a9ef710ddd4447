"""Replay seeded from data: an online run's Reverb replay filled from RLDS datasets before acting.

    rillet train-online dqn --env-id bsuite/deep_sea/0 --replay.demonstrations data/deep-sea-expert \
        --replay.demo-fraction 0.25 ...

The datasets' records become the agent's replay items (`agent_data.agent_batches`: n-step transitions,
or sequences of the agent record's length with the recurrent extras a dataset lacks filled in), each
inserted once with priority 1:
    demo_fraction == 0   into the run's replay table (a pre-filled replay: the items age out FIFO as the
                         actors' items arrive; their inserts count towards the rate limiter)
    demo_fraction > 0    into a second table, DEMO_TABLE (uniform, never evicted, no rate limit), and
                         every learner batch takes round(demo_fraction * B) rows from it and the rest
                         from the replay table (R2D3's mixing with a fixed ratio). Only the replay
                         rows' priorities are updated; demonstration rows get importance weight 1.
The learner's metrics carry replay/demo_fraction, the share of demonstration rows in its batches.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import reverb
import tree

from rillet.datasets import reverb_sampler
from rillet.datasets.reverb_tables import make_table
from rillet.errors import ConfigError
from rillet.pipelines.agent_data import agent_batches

DEMO_TABLE = "demonstrations"

__all__ = ["DEMO_TABLE", "demo_batch_size", "demo_table", "insert_demonstrations", "mixed_batches", "replay_rows"]


def demo_batch_size(batch_size: int, demo_fraction: float) -> int:
    """Rows of a batch of `batch_size` that come from the demonstration table; ConfigError unless both
    parts get at least one row."""
    rows = int(round(demo_fraction * batch_size))
    if demo_fraction > 0 and not 1 <= rows < batch_size:
        raise ConfigError(f"replay.demo-fraction {demo_fraction} of a batch of {batch_size} gives {rows} "
                          "demonstration rows; choose a fraction that leaves at least one row to each table.")
    return rows


def demo_table(signature: Any, max_size: int) -> reverb.Table:
    """DEMO_TABLE: uniform sampling, nothing evicted below max_size items, sampling from the first item."""
    return make_table(DEMO_TABLE, signature, sampler="uniform", max_size=max_size, min_size_to_sample=1)


def insert_demonstrations(address: str, table: str, paths: Sequence[str], agent: str, learner: Any, replay: Any,
                          gamma: float) -> int:
    """Inserts every replay item of the datasets at `paths` (one pass, in order) into `table`; returns
    how many. The items have the replay table's layout (see the module docstring)."""
    client, count = reverb.Client(address), 0
    with client.trajectory_writer(num_keep_alive_refs=1) as writer:
        for path in paths:
            batches = agent_batches(path, agent, learner, replay, gamma=gamma, shuffle=False, num_epochs=1,
                                    drop_remainder=False)
            for batch in batches:
                for i in range(len(batch["reward"])):
                    writer.append(tree.map_structure(lambda x: x[i], batch))
                    writer.create_item(table, 1.0, tree.map_structure(lambda c: c[-1], writer.history))
                    count += 1
                writer.flush()
    return count


def mixed_batches(replay: Iterator[dict], address: str, demo_rows: int) -> Iterator[dict]:
    """Source: each replay batch {"data", "key", "probability"} [B_r] followed by demo_rows rows sampled
    from DEMO_TABLE; adds "demo" [B] bool (which rows are demonstrations)."""
    demos = reverb_sampler.sample_batches(address, DEMO_TABLE, demo_rows)
    for batch in replay:
        demo = next(demos)
        rows = len(batch["key"])
        yield {"data": tree.map_structure(lambda a, b: np.concatenate([a, b]), batch["data"], demo["data"]),
               "key": np.concatenate([batch["key"], demo["key"]]),
               "probability": np.concatenate([batch["probability"], demo["probability"]]),
               "demo": np.arange(rows + demo_rows) >= rows}


def replay_rows(stage: Callable[[Iterator[dict]], Iterator[dict]]) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """The batch transform `stage` that adds data["weights"] (importance weights) applied to the replay
    rows of mixed batches only; demonstration rows get weight 1."""

    def apply(batches):
        batches, copy = itertools.tee(batches)
        parts = ({"data": tree.map_structure(lambda x: x[~b["demo"]], b["data"]), "key": b["key"][~b["demo"]],
                  "probability": b["probability"][~b["demo"]]} for b in copy)
        for batch, part in zip(batches, stage(parts)):
            weights = np.ones(len(batch["demo"]), np.float32)
            weights[~batch["demo"]] = part["data"]["weights"]
            yield {**batch, "data": {**batch["data"], "weights": weights}}

    return apply
