"""The cluster memory shared by actor threads: no lost update, a checkpoint round trip, bad input."""

import threading

import numpy as np
import pytest

from rillet.actors.cluster_memory import ClusterConfig
from rillet.actors.shared_cluster_memory import SharedClusterMemory
from rillet.errors import SpecMismatchError
from rillet.pipelines.checkpointing import Checkpointer

NO_DECAY = ClusterConfig(capacity=16, count_decay=1.0)  # counts then sum the visits exactly


def test_two_actor_threads_lose_no_update():
    """Two threads score the same two states, 40 ticks of 4 embeddings each: each state's atom ends
    with exactly the visits of both threads (the first visit inserts it with count 1)."""
    memory = SharedClusterMemory(NO_DECAY, 3, key=0)
    states = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
    tick = np.repeat(states, 2, axis=0)  # [4, 3]: each state twice per tick
    start = threading.Barrier(2)

    def actor():
        start.wait()
        for _ in range(40):
            memory.score(tick)

    threads = [threading.Thread(target=actor) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert memory.atoms_in_use == 2
    np.testing.assert_array_equal(np.sort(memory.counts()), [160.0, 160.0])  # 2 threads x 40 ticks x 2 visits


def test_rewards_fall_as_a_state_is_revisited():
    memory = SharedClusterMemory(NO_DECAY, 2, key=1)
    rewards = [float(memory.score(np.array([[1.0, 2.0]], np.float32))[0]) for _ in range(6)]
    raw_order = np.argsort(rewards[1:])[::-1]  # normalised by a running std: compare the later visits
    assert rewards[0] > rewards[-1] and list(raw_order) == list(range(5))


def test_a_checkpointed_memory_continues_where_it_was(tmp_path):
    memory = SharedClusterMemory(ClusterConfig(capacity=32), 4, key=2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        memory.score(rng.normal(size=(3, 4)))
    ckpt = Checkpointer(str(tmp_path / "ckpt"), {"test": 1})
    ckpt.save(1, {"w": np.zeros(2, np.float32)}, {}, actor={"cluster_memory": memory.snapshot()})
    saved = ckpt.restore_actor()["cluster_memory"]
    ckpt.close()
    resumed = SharedClusterMemory(ClusterConfig(capacity=32), 4, key=99)
    resumed.restore(saved)
    probe = rng.normal(size=(2, 4))
    np.testing.assert_array_equal(resumed.score(probe), memory.score(probe))
    np.testing.assert_array_equal(resumed.counts(), memory.counts())


def test_bad_embeddings_and_foreign_checkpoints_are_refused():
    memory = SharedClusterMemory(ClusterConfig(capacity=8), 4)
    with pytest.raises(SpecMismatchError, match=r"embeddings \[B, 4\]"):
        memory.score(np.zeros((2, 3), np.float32))
    with pytest.raises(SpecMismatchError, match="same capacity"):
        memory.restore(SharedClusterMemory(ClusterConfig(capacity=16), 4).snapshot())
    with pytest.raises(SpecMismatchError, match="not a saved cluster memory"):
        memory.restore({"atoms": np.zeros((8, 4), np.float32)})
