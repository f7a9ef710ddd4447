"""rlds_writer: batched EnvPool steps -> one TFDS RLDS dataset of whole episodes, crash-safe."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.policies import random_policy
from rillet.datasets.rlds_reader import INCOMPLETE_INFIX, INCOMPLETE_MARKER, IncompleteDatasetError, rlds_episodes
from rillet.datasets.rlds_writer import RldsWriter, rlds_writer
from rillet.errors import ConfigError, SpecMismatchError
from rillet.pipelines.stages import Stream, run

FIELDS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
NUM_ENVS, LIMIT, TICKS = 4, 15, 70


def real_steps(num_envs=NUM_ENVS, limit=LIMIT, ticks=TICKS, seed=3):
    env = BatchedEnv("CartPole-v1", num_envs, seed=seed, max_episode_steps=limit)
    return env.spec, list(envpool_actor(env, random_policy(2), lambda: None, None, seed=seed, max_ticks=ticks))


def expected_episodes(steps):
    """Finished episodes in completion order (tick, then env) and how many were left open."""
    b = len(steps[0]["is_first"])
    cur, done = [None] * b, []
    for s in steps:
        for i in range(b):
            if s["is_first"][i]:
                cur[i] = []
            if cur[i] is not None:
                cur[i].append({k: s[k][i] for k in FIELDS})
                if s["is_last"][i]:
                    done.append({k: np.stack([x[k] for x in cur[i]]) for k in FIELDS})
                    cur[i] = None
    return done, sum(c is not None for c in cur)


def assert_same_episodes(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k in FIELDS:
            np.testing.assert_array_equal(np.asarray(g[k]), w[k], err_msg=k)
            assert np.asarray(g[k]).dtype == w[k].dtype, k


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    spec, steps = real_steps()
    out = str(tmp_path_factory.mktemp("w") / "cartpole")
    stage = rlds_writer(out, spec, env_id="CartPole-v1", policy_name="random", seed=3,
                        max_episodes_per_shard=3, flush_every=2)
    assert run(Stream(steps) | stage) == TICKS
    return out, steps, stage.writer.card


def test_array_record_round_trip_through_plain_tfds(written):
    out, steps, card = written
    want, open_at_end = expected_episodes(steps)
    lengths = {len(e["is_first"]) for e in want}
    assert len(lengths) > 1, "episodes of different lengths (terminated and truncated)"
    assert open_at_end >= 1
    for name in ("dataset_info.json", "features.json", "rillet_card.json", "metadata.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert not [n for n in os.listdir(os.path.dirname(out)) if INCOMPLETE_INFIX in n]

    builder = tfds.builder_from_directory(out)
    assert builder.info.splits["train"].num_shards == -(-len(want) // 3)
    assert builder.info.metadata["num_episodes"] == len(want)
    src = builder.as_data_source()["train"]
    got = []
    for i in range(len(src)):
        ep = list(src[i]["steps"])
        got.append({k: np.stack([np.asarray(s[k]) for s in ep]) for k in FIELDS})
    assert_same_episodes(got, want)
    for ep in got:
        assert ep["is_first"][0] and ep["is_last"][-1]
        assert not ep["is_first"][1:].any() and not ep["is_last"][:-1].any()

    # no step lost or duplicated: written + each env's open tail (after its last is_last) == all emitted
    last = np.array([s["is_last"] for s in steps])  # [TICKS, B]
    tails = sum(TICKS - 1 - int(np.flatnonzero(last[:, i])[-1]) for i in range(NUM_ENVS))
    assert card["num_steps"] + tails == NUM_ENVS * TICKS
    assert card["num_steps"] == sum(len(e["is_first"]) for e in want)

    got_rillet = [e["steps"] for e in rlds_episodes(out)]
    assert_same_episodes(got_rillet, want)


def test_card_counts(written):
    out, steps, card = written
    want, open_at_end = expected_episodes(steps)
    returns = [float(e["reward"].sum()) for e in want]
    assert card["env_id"] == "CartPole-v1" and card["policy"] == "random" and card["seed"] == 3
    import rillet

    assert card["rillet_version"] == rillet.__version__
    assert card["num_episodes"] == len(want)
    assert card["num_steps"] == sum(len(e["is_first"]) for e in want)
    assert card["return_mean"] == pytest.approx(np.mean(returns))
    assert card["return_min"] == min(returns) and card["return_max"] == max(returns)
    assert card["episodes_dropped_unfinished"] == open_at_end
    assert rlds_episodes(out).card == card


def test_unfinished_episode_dropped_and_counted(tmp_path):
    spec, steps = real_steps(num_envs=2, limit=6, ticks=30, seed=5)
    # cut right after env 0 starts an episode: that episode is unfinished at close
    cut = next(t for t in range(10, len(steps)) if steps[t]["is_first"][0]) + 1
    steps = steps[:cut]
    want, open_at_end = expected_episodes(steps)
    assert open_at_end >= 1
    with RldsWriter(tmp_path / "d", spec, env_id="CartPole-v1", policy_name="random", seed=5) as w:
        for s in steps:
            w.write(s)
    assert w.card["episodes_dropped_unfinished"] == open_at_end
    assert w.card["num_episodes"] == len(want)
    assert_same_episodes([e["steps"] for e in rlds_episodes(tmp_path / "d")], want)


def test_tfrecord_round_trip_through_as_dataset(tmp_path):
    spec, steps = real_steps(num_envs=2, limit=8, ticks=25, seed=9)
    want, _ = expected_episodes(steps)
    out = str(tmp_path / "tfr")
    run(Stream(steps) | rlds_writer(out, spec, env_id="CartPole-v1", policy_name="random", seed=9,
                                    file_format="tfrecord", max_episodes_per_shard=2))
    ds = tfds.builder_from_directory(out).as_dataset(split="train")
    got = []
    for ep in ds:
        rows = list(ep["steps"].as_numpy_iterator())
        got.append({k: np.stack([r[k] for r in rows]) for k in FIELDS})
    assert_same_episodes(got, want)
    with pytest.raises(ConfigError, match="array_record"):
        rlds_episodes(out)


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    from rillet.datasets.specs import ArraySpec, StepSpec
    from rillet.datasets.rlds_writer import RldsWriter
    spec = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=2)
    w = RldsWriter(sys.argv[1], spec, env_id="X", policy_name="p", seed=0, max_episodes_per_shard=1,
                   flush_every=1)
    for t in range(12):
        w.write({"observation": np.full((2, 3), t, np.float32), "action": np.zeros(2, np.int32),
                 "reward": np.ones(2, np.float32), "discount": np.ones(2, np.float32),
                 "is_first": np.full(2, t % 4 == 0), "is_last": np.full(2, t % 4 == 3),
                 "is_terminal": np.zeros(2, bool), "extras": {}})
    os._exit(7)  # killed before close()
""")


def test_crash_before_close_leaves_no_complete_dataset(tmp_path):
    out = str(tmp_path / "crashed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, out], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 7, proc.stderr.decode()[-2000:]
    assert not os.path.exists(out)
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith("crashed" + INCOMPLETE_INFIX)]
    assert len(leftovers) == 1
    tmp = os.path.join(tmp_path, leftovers[0])
    assert os.path.exists(os.path.join(tmp, INCOMPLETE_MARKER))
    assert any("array_record" in n for n in os.listdir(tmp)), "episodes were being written"
    for path in (out, tmp):
        with pytest.raises(IncompleteDatasetError, match="killed or crashed.*rm -rf"):
            rlds_episodes(path)


def test_exception_upstream_aborts_without_output(tmp_path):
    spec, steps = real_steps(num_envs=2, limit=5, ticks=12)

    def broken():
        yield from steps
        raise RuntimeError("actor died")

    out = str(tmp_path / "aborted")
    with pytest.raises(RuntimeError, match="actor died"):
        run(Stream(broken()) | rlds_writer(out, spec, env_id="CartPole-v1", policy_name="r", seed=0))
    assert os.listdir(tmp_path) == []


def test_bad_arguments_and_steps(tmp_path):
    spec, steps = real_steps(num_envs=2, limit=5, ticks=3)
    kw = dict(env_id="CartPole-v1", policy_name="r", seed=0)
    with pytest.raises(ConfigError, match="file_format"):
        RldsWriter(tmp_path / "a", spec, file_format="parquet", **kw)
    os.makedirs(tmp_path / "exists")
    with pytest.raises(ConfigError, match="already exists"):
        RldsWriter(tmp_path / "exists", spec, **kw)
    w = RldsWriter(tmp_path / "b", spec, **kw)
    bad = dict(steps[0], observation=steps[0]["observation"].astype(np.float64))
    with pytest.raises(SpecMismatchError, match="observation"):
        w.write(bad)
    w.write(steps[0])
    with pytest.raises(SpecMismatchError, match="environments"):
        w.write({k: (v if k == "extras" else v[:1]) for k, v in steps[1].items()})
    w.abort()
    assert not os.path.exists(tmp_path / "b")


def test_stage_closes_when_the_consumer_stops(tmp_path):
    spec, steps = real_steps(num_envs=2, limit=5, ticks=20)
    out = str(tmp_path / "stopped")
    stream = Stream(steps) | rlds_writer(out, spec, env_id="CartPole-v1", policy_name="r", seed=0)
    for t, _ in enumerate(stream):
        if t == 14:
            break
    iter(stream).close()  # what garbage collection does to an abandoned generator
    want, _ = expected_episodes(steps[:15])
    assert_same_episodes([e["steps"] for e in rlds_episodes(out)], want)


def reference_split(steps):
    """The per-step splitter the writer replaced: (episodes in completion order, abandoned, outside, open)."""
    b = len(steps[0]["is_first"])
    cur, done, abandoned, outside = [None] * b, [], 0, 0
    for s in steps:
        for i in range(b):
            if s["is_first"][i]:
                abandoned += cur[i] is not None
                cur[i] = []
            if cur[i] is None:
                outside += 1
                continue
            cur[i].append({k: s[k][i] for k in FIELDS} | {"h": s["extras"]["h"][i]})
            if s["is_last"][i]:
                done.append({k: np.stack([x[k] for x in cur[i]]) for k in FIELDS + ("h",)})
                cur[i] = None
    return done, abandoned, outside, sum(c is not None for c in cur)


def test_vectorised_split_matches_per_step_reference(tmp_path):
    """Random flags over 5 envs: episodes of 1..150 steps (the tick buffer grows and compacts),
    resets mid-episode (abandoned), streams joined mid-episode (outside), open tails at close."""
    from rillet.datasets.specs import ArraySpec, StepSpec

    spec = StepSpec(ArraySpec((2, 3), "float32"), ArraySpec((), "int32"), num_actions=3,
                    extras={"h": ArraySpec((2,), "int64")})
    rng = np.random.default_rng(7)
    b, ticks = 5, 600
    first, last = np.zeros((ticks, b), bool), np.zeros((ticks, b), bool)
    for i in range(b):
        t = int(rng.integers(0, 5))  # steps before t are outside any episode
        while t < ticks:
            n = int(rng.choice([1, 2, int(rng.integers(3, 150))]))
            first[t, i] = True
            if rng.random() < 0.1:  # reset before the end: abandoned
                t += int(rng.integers(1, n + 1))
                continue
            if t + n - 1 < ticks:
                last[t + n - 1, i] = True
            t += n + (int(rng.integers(1, 4)) if rng.random() < 0.1 else 0)  # sometimes a gap
    steps = [{"observation": rng.normal(size=(b, 2, 3)).astype(np.float32),
              "action": rng.integers(0, 3, b).astype(np.int32), "reward": rng.normal(size=b).astype(np.float32),
              "discount": np.ones(b, np.float32), "is_first": first[t], "is_last": last[t],
              "is_terminal": last[t] & (rng.random(b) < 0.5), "extras": {"h": rng.integers(-9, 2**40, (b, 2))}}
             for t in range(ticks)]
    want, abandoned, outside, still_open = reference_split(steps)
    assert abandoned and outside and still_open and max(len(e["reward"]) for e in want) > 100
    with RldsWriter(tmp_path / "d", spec, env_id="X", policy_name="p", seed=0, max_episodes_per_shard=7) as w:
        for s in steps:
            w.write(s)
    got = [e["steps"] for e in rlds_episodes(tmp_path / "d")]
    assert_same_episodes(got, want)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g["extras"]["h"], e["h"])
    assert (w.card["episodes_abandoned"], w.card["steps_outside_episodes"], w.card["episodes_dropped_unfinished"]) == (
        abandoned, outside, still_open)
    assert w.card["num_steps"] == sum(len(e["reward"]) for e in want)
    with pytest.raises(SpecMismatchError, match="one row per environment"):
        RldsWriter(tmp_path / "e", spec, env_id="X", policy_name="p", seed=0).write(
            dict(steps[0], reward=steps[0]["reward"][:2]))


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_image_env_round_trip_through_tfds(tmp_path, file_format):
    """Pong-v5 (uint8 [4, 84, 84] frames), a few short episodes from 2 envs: what rillet writes,
    plain TFDS reads back identically (as_data_source for ArrayRecord, as_dataset for TFRecord)."""
    env = BatchedEnv("Pong-v5", 2, seed=1, max_episode_steps=6)
    steps = list(envpool_actor(env, random_policy(env.spec.num_actions), lambda: None, None, seed=1, max_ticks=20))
    want, _ = expected_episodes(steps)
    out = str(tmp_path / "pong")
    run(Stream(steps) | rlds_writer(out, env.spec, env_id="Pong-v5", policy_name="random", seed=1,
                                    file_format=file_format))
    builder = tfds.builder_from_directory(out)
    if file_format == "array_record":
        source = builder.as_data_source()["train"]
        got = [{k: np.stack([s[k] for s in source[i]["steps"]]) for k in FIELDS} for i in range(len(source))]
        assert_same_episodes(got, want)
        ours = rlds_episodes(out)
        assert_same_episodes([ours[i]["steps"] for i in range(len(ours))], want)
    else:
        got = [{k: np.asarray(v) for k, v in ep["steps"].items()}
               for ep in tfds.as_numpy(builder.as_dataset(split="train").map(
                   lambda e: {"steps": e["steps"].batch(100).get_single_element()}))]
        assert_same_episodes(got, want)
    assert want and want[0]["observation"].shape[1:] == (4, 84, 84)
