"""Sampling round trip, priority updates, table construction and signature checks."""

import numpy as np
import pytest
import reverb

from replay_sim import SPEC, simulate
from rillet.datasets.reverb_sampler import check_table_matches, sample_batches, update_priorities
from rillet.datasets.reverb_tables import (
    make_server,
    make_table,
    sequence_signature,
    server_address,
    transition_signature,
)
from rillet.datasets.reverb_writer import NStepTransitionWriter, SequenceWriter
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError

NUM_TRANSITIONS = 3 * (5 + 3)  # three envs, episodes of 5 and 3 non-last steps


@pytest.fixture(scope="module")
def address():
    tables = [
        make_table("uniform", transition_signature(SPEC), max_size=1000),
        make_table("prio", transition_signature(SPEC), sampler="prioritized", priority_exponent=1.0, max_size=1000),
        make_table("warmup", transition_signature(SPEC), max_size=100, min_size_to_sample=50),
        make_table("seq", sequence_signature(SPEC, 4), max_size=100),
        make_table("ratio", transition_signature(SPEC), max_size=100, samples_per_insert=2.0),
    ]
    srv = make_server(tables)
    addr = server_address(srv)
    ticks, _ = simulate([[5, 3]] * 3, [[True, False]] * 3, num_ticks=6 + 4)
    for table in ("uniform", "prio", "warmup"):
        with NStepTransitionWriter(addr, table, SPEC, n=3, gamma=0.99) as w:
            for tick in ticks:
                w.write(tick)
        assert w.items_written == NUM_TRANSITIONS
    with SequenceWriter(addr, "seq", SPEC, length=4, period=2) as w:
        for tick in ticks:
            w.write(tick)
    yield addr
    srv.stop()


def test_sample_batches_shapes_dtypes_and_contents(address):
    it = sample_batches(address, "uniform", batch_size=8, prefetch=2)
    for _ in range(3):
        batch = next(it)
        data = batch["data"]
        assert data["observation"].shape == (8, 3) and data["observation"].dtype == np.float32
        assert data["next_observation"].shape == (8, 3)
        assert data["action"].shape == (8,) and data["action"].dtype == np.int32
        assert data["reward"].shape == (8,) and data["reward"].dtype == np.float32
        assert data["discount"].shape == (8,) and data["discount"].dtype == np.float32
        assert data["extras"]["h"].shape == (8, 2) and data["extras"]["h"].dtype == np.float32
        assert batch["key"].shape == (8,) and batch["key"].dtype == np.uint64
        assert batch["probability"].shape == (8,) and batch["probability"].dtype == np.float64
        np.testing.assert_allclose(batch["probability"], 1.0 / NUM_TRANSITIONS, rtol=1e-6)
        # The writer's data: action encodes (env, episode, t) as written by the simulator.
        env, ep, t = data["observation"].astype(int).T
        np.testing.assert_array_equal(data["action"], 1000 * env + 100 * ep + t)
        assert ((data["next_observation"][:, 2] - t >= 1) & (data["next_observation"][:, 2] - t <= 3)).all()


def test_sample_sequences(address):
    batch = next(sample_batches(address, "seq", batch_size=4))
    assert batch["data"]["observation"].shape == (4, 4, 3)
    assert batch["data"]["mask"].shape == (4, 4) and batch["data"]["mask"].dtype == bool
    assert batch["data"]["mask"][:, 0].all()


def test_priority_update_changes_sampling_probability(address):
    batch = next(sample_batches(address, "prio", batch_size=4))
    np.testing.assert_allclose(batch["probability"], 1.0 / NUM_TRANSITIONS, rtol=1e-6)
    favourite = batch["key"][0]
    update_priorities(address, "prio", [favourite], [1000.0])
    expected = 1000.0 / (1000.0 + NUM_TRANSITIONS - 1)
    batch = next(sample_batches(address, "prio", batch_size=64))
    hits = batch["key"] == favourite
    assert hits.mean() > 0.8
    np.testing.assert_allclose(batch["probability"][hits], expected, rtol=1e-5)
    np.testing.assert_allclose(batch["probability"][~hits], 1.0 / (1000.0 + NUM_TRANSITIONS - 1), rtol=1e-5)
    update_priorities(reverb.Client(address), "prio", batch["key"][:1], [1.0])  # restore


def test_update_priorities_rejects_bad_input(address):
    with pytest.raises(SpecMismatchError, match="one priority per"):
        update_priorities(address, "prio", [1, 2], [1.0])
    with pytest.raises(SpecMismatchError, match="finite"):
        update_priorities(address, "prio", [1], [-1.0])
    with pytest.raises(SpecMismatchError, match="finite"):
        update_priorities(address, "prio", [1], [np.nan])


def test_min_size_rate_limiter_blocks_sampling(address):
    assert NUM_TRANSITIONS < 50
    it = sample_batches(address, "warmup", batch_size=1, rate_limiter_timeout_ms=200)
    with pytest.raises(StopIteration):  # the limiter never allowed a sample within the timeout
        next(it)
    assert next(sample_batches(address, "uniform", batch_size=1, rate_limiter_timeout_ms=200))["key"].shape == (1,)


def test_ratio_table_configuration(address):
    info = reverb.Client(address).server_info()["ratio"]
    assert info.rate_limiter_info.samples_per_insert == 2.0
    assert info.rate_limiter_info.min_size_to_sample == 1
    assert info.max_size == 100
    assert info.sampler_options.uniform
    assert info.remover_options.fifo


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "lifo", "max_size": 10}, "unknown replay sampler"),
        ({"max_size": 5, "min_size_to_sample": 10}, "max_size"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": 10, "min_size_to_sample": 0}, "min_size_to_sample"),
        ({"max_size": 10, "samples_per_insert": 0.0}, "samples_per_insert"),
        ({"max_size": 10, "samples_per_insert": 4.0, "error_buffer": 1.0}, "error_buffer"),
        ({"max_size": 10, "error_buffer": 5.0}, "error_buffer"),
        ({"max_size": 10, "sampler": "prioritized", "priority_exponent": -0.5}, "priority_exponent"),
    ],
)
def test_make_table_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_table("t", transition_signature(SPEC), **kwargs)


def test_make_server_validation():
    t = make_table("same", transition_signature(SPEC), max_size=10)
    with pytest.raises(ConfigError, match="unique"):
        make_server([t, make_table("same", transition_signature(SPEC), max_size=10)])
    with pytest.raises(ConfigError, match="at least one table"):
        make_server([])


def test_check_table_matches(address):
    check_table_matches(address, "uniform", transition_signature(SPEC))
    check_table_matches(address, "seq", sequence_signature(SPEC, 4))
    wider = StepSpec(observation=ArraySpec((4,), "float32"), action=SPEC.action, extras=SPEC.extras)
    with pytest.raises(SpecMismatchError, match=r"'observation'.*recreate the table|Recreate the table") as info:
        check_table_matches(address, "uniform", transition_signature(wider))
    assert "(3,)" in str(info.value) and "(4,)" in str(info.value) and "next_observation" in str(info.value)
    with pytest.raises(SpecMismatchError, match="mask"):
        check_table_matches(address, "uniform", sequence_signature(SPEC, 4))
    with pytest.raises(SpecMismatchError, match="extras/h"):
        check_table_matches(address, "uniform", transition_signature(StepSpec(SPEC.observation, SPEC.action)))
    with pytest.raises(ConfigError, match="no table named"):
        check_table_matches(address, "nope", transition_signature(SPEC))
