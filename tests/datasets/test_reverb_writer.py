"""Reverb writers against a real in-process server, compared with slow loop-based references."""

import threading
import time

import numpy as np
import pytest
import reverb
from hypothesis import example, given, settings, strategies as st

from replay_sim import SPEC, drain, reference_sequences, reference_transitions, simulate
from rillet.datasets.reverb_tables import make_server, sequence_signature, server_address, transition_signature
from rillet.datasets.reverb_writer import NStepTransitionWriter, SequenceWriter, WriterStopped, reverb_writer
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError

SEQ_LENGTHS = (1, 2, 3, 5)
ODD_SPEC = StepSpec(observation=ArraySpec((2, 2), "uint8"), action=ArraySpec((2,), "float32"))


@pytest.fixture(scope="module")
def server():
    tables = [reverb.Table.queue("transitions", 100_000, signature=transition_signature(SPEC))]
    tables += [reverb.Table.queue(f"seq{L}", 100_000, signature=sequence_signature(SPEC, L)) for L in SEQ_LENGTHS]
    tables += [
        reverb.Table.queue("odd_transitions", 1000, signature=transition_signature(ODD_SPEC)),
        reverb.Table.queue("odd_seq", 1000, signature=sequence_signature(ODD_SPEC, 3)),
    ]
    srv = make_server(tables)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return reverb.Client(server_address(server))


@st.composite
def actor_streams(draw):
    """Random per-env episode lengths/ends and a number of ticks that cuts some episodes short."""
    B = draw(st.integers(1, 4))
    lengths = [draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)) for _ in range(B)]
    terminated = [[draw(st.booleans()) for _ in ls] for ls in lengths]
    shortest = min(sum(T + 1 for T in ls) for ls in lengths)
    ticks = draw(st.integers(1, shortest))
    return lengths, terminated, ticks, draw(st.integers(0, 2**16))


def _key(item, time_axis=False):
    obs = item["observation"][0] if time_axis else item["observation"]
    return tuple(int(x) for x in obs)


def _assert_unique_and_ordered(items, time_axis=False):
    keys = [_key(it, time_axis) for it in items]
    assert len(set(keys)) == len(keys), "an item was written twice"
    for env in {k[0] for k in keys}:
        mine = [k for k in keys if k[0] == env]
        assert mine == sorted(mine), "one env's items must arrive in episode/step order"
    return dict(zip(keys, items))


@settings(max_examples=20, deadline=None)
@given(stream=actor_streams(), n=st.integers(1, 4), gamma=st.sampled_from([1.0, 0.9, 0.5]))
@example(stream=([[1, 4], [6, 2]], [[True, False], [False, True]], 7, 7), n=4, gamma=0.9)
def test_nstep_transitions_match_reference(client, stream, n, gamma):
    lengths, terminated, num_ticks, seed = stream
    client.reset("transitions")
    ticks, episodes = simulate(lengths, terminated, num_ticks, seed)
    with NStepTransitionWriter(client, "transitions", SPEC, n=n, gamma=gamma) as writer:
        for tick in ticks:
            writer.write(tick)
    expected = reference_transitions(episodes, n, gamma)
    assert writer.items_written == len(expected)
    assert client.server_info()["transitions"].current_size == len(expected)
    got = _assert_unique_and_ordered(drain(client, "transitions", len(expected)))
    assert set(got) == set(expected)
    for key, want in expected.items():
        item = got[key]
        np.testing.assert_array_equal(item["observation"], want["observation"])
        np.testing.assert_array_equal(item["next_observation"], want["next_observation"])
        np.testing.assert_array_equal(item["action"], want["action"])
        np.testing.assert_array_equal(item["extras"]["h"], want["extras"]["h"])
        np.testing.assert_allclose(item["reward"], want["reward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(item["discount"], want["discount"], rtol=1e-6, atol=1e-7)
        # Same episode: next_observation is (env, episode, t + m) with 1 <= m <= n.
        assert item["next_observation"][:2].tolist() == list(key[:2])
        assert 1 <= item["next_observation"][2] - key[2] <= n
        assert item["reward"].dtype == np.float32 and item["discount"].dtype == np.float32


@settings(max_examples=20, deadline=None)
@given(stream=actor_streams(), length=st.sampled_from(SEQ_LENGTHS), period=st.integers(1, 4))
@example(stream=([[2]], [[False]], 3, 0), length=5, period=1)  # two padded starts in one episode
@example(stream=([[1, 6], [3, 1, 2]], [[True, False], [False, True, True]], 9, 1), length=3, period=2)
def test_sequences_match_reference(client, stream, length, period):
    lengths, terminated, num_ticks, seed = stream
    table = f"seq{length}"
    client.reset(table)
    ticks, episodes = simulate(lengths, terminated, num_ticks, seed)
    with SequenceWriter(client, table, SPEC, length=length, period=period) as writer:
        stage = reverb_writer(writer)
        passed = list(stage(iter(ticks)))
    assert all(a is b for a, b in zip(passed, ticks)) and len(passed) == len(ticks)
    expected = reference_sequences(episodes, length, period)
    assert writer.items_written == len(expected)
    got = _assert_unique_and_ordered(drain(client, table, len(expected)), time_axis=True)
    assert set(got) == set(expected)
    for key, want in expected.items():
        item = got[key]
        for name in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal", "mask"):
            np.testing.assert_array_equal(item[name], want[name], err_msg=f"{key} {name}")
            assert item[name].shape[0] == length
        np.testing.assert_array_equal(item["extras"]["h"], want["extras"]["h"])
        # Never crosses an episode end: every real step belongs to the same (env, episode).
        real = item["observation"][item["mask"]]
        assert (real[:, :2] == np.asarray(key[:2])).all()
        assert key[2] % period == 0 and not item["is_last"][0]
        assert item["is_last"][item["mask"]].sum() <= 1
        if not item["mask"].all():  # padded: the last real step ends the episode
            assert item["is_last"][item["mask"]][-1]


def test_other_spec_no_extras_in_order(client):
    """uint8 image observations, continuous actions, no extras; B=1 so queue order is known."""
    client.reset("odd_transitions")
    client.reset("odd_seq")
    ticks, episodes = simulate([[4, 2, 3]], [[True, False, True]], num_ticks=12, seed=3, spec=ODD_SPEC)
    tw = NStepTransitionWriter(client.server_address, "odd_transitions", ODD_SPEC, n=3, gamma=0.99)
    sw = SequenceWriter(client, "odd_seq", ODD_SPEC, length=3, period=2)
    for tick in ticks:
        tw.write(tick)
        sw.write(tick)
    tw.close()
    sw.close()
    want_t = [v for _, v in sorted(reference_transitions(episodes, 3, 0.99).items())]
    got_t = drain(client, "odd_transitions", tw.items_written)
    assert len(got_t) == len(want_t) == 4 + 2 + 3
    for got, want in zip(got_t, want_t):
        assert got["observation"].dtype == np.uint8 and got["extras"] == {}
        np.testing.assert_array_equal(got["observation"], want["observation"])
        np.testing.assert_array_equal(got["next_observation"], want["next_observation"])
        np.testing.assert_array_equal(got["action"], want["action"])
        np.testing.assert_allclose(got["reward"], want["reward"], rtol=1e-5)
        np.testing.assert_allclose(got["discount"], want["discount"], rtol=1e-6)
    want_s = [v for _, v in sorted(reference_sequences(episodes, 3, 2, spec=ODD_SPEC).items())]
    got_s = drain(client, "odd_seq", sw.items_written)
    assert len(got_s) == len(want_s) == 2 + 1 + 2
    for got, want in zip(got_s, want_s):
        for name in ("observation", "action", "reward", "mask", "is_last"):
            np.testing.assert_array_equal(got[name], want[name])


def test_terminal_transition_has_zero_bootstrap_discount(client):
    client.reset("transitions")
    ticks, _ = simulate([[2], [2]], [[True], [False]], num_ticks=3)
    with NStepTransitionWriter(client, "transitions", SPEC, n=5, gamma=0.9) as w:
        for tick in ticks:
            w.write(tick)
    items = {_key(it)[:1] + _key(it)[2:]: it for it in drain(client, "transitions", 4)}
    assert float(items[(0, 0)]["discount"]) == 0.0 and float(items[(0, 1)]["discount"]) == 0.0
    np.testing.assert_allclose(items[(1, 0)]["discount"], 0.81, rtol=1e-6)  # truncated: gamma**2
    np.testing.assert_allclose(items[(1, 1)]["discount"], 0.9, rtol=1e-6)


def test_write_validates_first_step_and_batch_size(client):
    ticks, _ = simulate([[3], [3]], [[True], [True]], num_ticks=3)
    bad = dict(ticks[0], reward=ticks[0]["reward"].astype(np.float64))
    w = NStepTransitionWriter(client, "transitions", SPEC, n=1, gamma=0.9)
    with pytest.raises(SpecMismatchError, match="reward"):
        w.write(bad)
    stage = reverb_writer(w)
    with pytest.raises(SpecMismatchError, match="extras"):
        next(stage(iter([dict(ticks[0], extras={})])))
    w.write(ticks[0])
    one_env = {k: (v[:1] if k != "extras" else {n: a[:1] for n, a in v.items()}) for k, v in ticks[1].items()}
    with pytest.raises(SpecMismatchError, match="B=1"):
        w.write(one_env)
    w.close()


def test_stream_must_start_at_reset(client):
    ticks, _ = simulate([[3]], [[True]], num_ticks=3)
    with SequenceWriter(client, "seq2", SPEC, length=2, period=1) as w:
        with pytest.raises(SpecMismatchError, match="is_first"):
            w.write(ticks[1])


def test_mid_episode_reset_abandons_pending_items(client):
    client.reset("transitions")
    first, _ = simulate([[5]], [[True]], num_ticks=3)  # steps 0..2 of a 5-step episode
    again, episodes = simulate([[2]], [[True]], num_ticks=3, seed=1)
    with NStepTransitionWriter(client, "transitions", SPEC, n=2, gamma=0.9) as w:
        for tick in first + again:
            w.write(tick)
    assert w.episodes_abandoned == 1
    # Step 0 of the abandoned episode (bootstrap at step 2) plus the 2 of the full episode.
    assert w.items_written == 3
    assert client.server_info()["transitions"].current_size == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n": 0, "gamma": 0.9}, "n-step"), ({"n": 2, "gamma": 1.5}, "gamma"), ({"n": 1, "gamma": 0.9, "priority": -1.0}, "priority")],
)
def test_nstep_writer_config_errors(client, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        NStepTransitionWriter(client, "transitions", SPEC, **kwargs)


def test_sequence_writer_config_errors(client):
    with pytest.raises(ConfigError, match="length"):
        SequenceWriter(client, "seq2", SPEC, length=0, period=1)
    with pytest.raises(ConfigError, match="period"):
        SequenceWriter(client, "seq2", SPEC, length=2, period=0)
    with pytest.raises(ConfigError, match="address"):
        SequenceWriter(None, "seq2", SPEC, length=2, period=1)


def test_a_writer_held_by_the_rate_limiter_gives_up_when_stopped():
    """Nobody samples, so the table admits 3 inserts and holds the rest back; setting the stop signal
    frees the blocked writer within a second, and closing it then does not block either."""
    limiter = reverb.rate_limiters.SampleToInsertRatio(samples_per_insert=1.0, min_size_to_sample=1, error_buffer=2.0)
    table = reverb.Table("held", reverb.selectors.Uniform(), reverb.selectors.Fifo(), 100, limiter,
                         signature=transition_signature(SPEC))
    server = make_server([table])
    stop, outcome = threading.Event(), {}
    ticks, _ = simulate([[3] * 10], [[True] * 10], num_ticks=40)
    writer = NStepTransitionWriter(reverb.Client(server_address(server)), "held", SPEC, n=1, gamma=0.9)
    writer.stop_on(stop.is_set)

    def write_all():
        try:
            for tick in ticks:
                writer.write(tick)
            outcome["result"] = "wrote everything"
        except WriterStopped:
            outcome["result"] = "stopped"
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=write_all, daemon=True)
    try:
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "the rate limiter should hold the writer back"
        stopped_at = time.monotonic()
        stop.set()
        thread.join(timeout=5.0)
        assert outcome.get("result") == "stopped" and outcome["at"] - stopped_at < 1.0
        closing = time.monotonic()
        writer.close()
        assert time.monotonic() - closing < 2.0
    finally:
        server.stop()
