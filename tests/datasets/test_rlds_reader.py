"""rlds_episodes: TF-free reading of rillet RLDS datasets; transitions and padded windows."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.actors.policies import random_policy
from rillet.datasets.rlds_reader import (DatasetPathError, episodes_to_transitions, rlds_episodes,
                                         windows)
from rillet.datasets.rlds_writer import RldsWriter
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError
from rillet.pipelines.stages import Stream

FIELDS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


def per_env_episodes(steps):
    """{env: [episode dict of [T+1, ...] arrays]} of the finished episodes."""
    b = len(steps[0]["is_first"])
    out = {}
    for i in range(b):
        cur = None
        for s in steps:
            if s["is_first"][i]:
                cur = []
            if cur is not None:
                cur.append(s)
                if s["is_last"][i]:
                    ep = {k: np.stack([x[k][i] for x in cur]) for k in FIELDS}
                    ep["extras"] = {k: np.stack([x["extras"][k][i] for x in cur]) for k in s["extras"]}
                    out.setdefault(i, []).append(ep)
                    cur = None
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Real CartPole steps (3 envs) with a per-step extra, written as ArrayRecord."""
    env = BatchedEnv("CartPole-v1", 3, seed=11, max_episode_steps=10)
    spec = env.spec.with_extras(logp=ArraySpec((), "float32"))
    steps = list(envpool_actor(env, random_policy(2), lambda: None, None, seed=1, max_ticks=45))
    for t, s in enumerate(steps):
        s["extras"] = {"logp": np.arange(3, dtype=np.float32) + 10 * t}
    out = str(tmp_path_factory.mktemp("r") / "ds")
    with RldsWriter(out, spec, env_id="CartPole-v1", policy_name="random", seed=11,
                    max_episodes_per_shard=4) as w:
        for s in steps:
            w.write(s)
    return out, spec, steps


def key(ep):
    return ep["observation"].tobytes() + ep["extras"]["logp"].tobytes()


def test_reads_every_episode_once(dataset):
    out, spec, steps = dataset
    eps = rlds_episodes(out, spec=spec)
    import grain.python as grain

    assert isinstance(eps.source, grain.ArrayRecordDataSource)
    assert eps.spec == spec
    want = {key(e): e for es in per_env_episodes(steps).values() for e in es}
    got = [e["steps"] for e in eps]
    assert len(got) == len(want) == eps.card["num_episodes"]
    assert {key(e) for e in got} == set(want)
    for g in got:
        w = want[key(g)]
        for k in FIELDS:
            np.testing.assert_array_equal(g[k], w[k])
            assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape
        np.testing.assert_array_equal(g["extras"]["logp"], w["extras"]["logp"])
        assert g["is_first"][0] and g["is_last"][-1] and g["is_first"].sum() == g["is_last"].sum() == 1


def test_decoding_does_not_import_tensorflow(dataset):
    out, _, _ = dataset
    script = textwrap.dedent("""
        import sys
        from rillet.datasets.rlds_reader import rlds_episodes
        n = sum(len(e["steps"]["reward"]) for e in rlds_episodes(sys.argv[1]))
        assert n > 0
        tf = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
        print("TF:", tf)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", script, out], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TF: []" in proc.stdout


def test_errors(dataset, tmp_path):
    out, spec, _ = dataset
    with pytest.raises(DatasetPathError, match="does not exist"):
        rlds_episodes(tmp_path / "nothing")
    with pytest.raises(DatasetPathError, match="not a TFDS dataset"):
        rlds_episodes(tmp_path)
    assert issubclass(DatasetPathError, ConfigError)
    with pytest.raises(ConfigError, match="unknown split 'test'.*'train'"):
        rlds_episodes(out, split="test")
    other = StepSpec(ArraySpec((8,), "float32"), ArraySpec((), "int32"), num_actions=2)
    with pytest.raises(SpecMismatchError, match="observation: expected \\(8,\\)"):
        rlds_episodes(out, spec=other)
    with pytest.raises(SpecMismatchError, match="extras/logp: not in the spec"):
        rlds_episodes(out, spec=StepSpec(spec.observation, spec.action, spec.num_actions))
    with open(tmp_path / "dataset_info.json", "w") as f:
        json.dump({"name": "x", "fileFormat": "array_record", "splits": []}, f)
    with pytest.raises(DatasetPathError, match="features.json"):
        rlds_episodes(tmp_path)


def synthetic_episode(n, obs_dim=2):
    return {"steps": {
        "observation": np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim),
        "action": np.arange(n, dtype=np.int32), "reward": np.ones(n, np.float32),
        "discount": np.r_[np.ones(n - 1), 0].astype(np.float32),
        "is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1,
        "is_terminal": np.arange(n) == n - 1, "extras": {"h": np.arange(n, dtype=np.float32) * 2},
    }}


def test_episodes_to_transitions():
    (tr,) = episodes_to_transitions([synthetic_episode(5)])
    assert tr["observation"].shape == tr["next_observation"].shape == (4, 2)
    np.testing.assert_array_equal(tr["next_observation"][:-1], tr["observation"][1:])
    np.testing.assert_array_equal(tr["action"], [0, 1, 2, 3])
    np.testing.assert_array_equal(tr["is_terminal"], [False, False, False, True])
    np.testing.assert_array_equal(tr["extras"]["h"], [0, 2, 4, 6])
    assert tr["discount"].shape == tr["reward"].shape == (4,)


def test_windows_pad_mask_and_stride():
    eps = [synthetic_episode(7), synthetic_episode(2)]
    ws = list(Stream(eps) | windows(3))
    assert [w["mask"].sum() for w in ws] == [3, 3, 1, 2]
    assert all(w["steps"]["observation"].shape == (3, 2) and w["steps"]["extras"]["h"].shape == (3,) for w in ws)
    np.testing.assert_array_equal(ws[2]["steps"]["action"], [6, 0, 0])
    np.testing.assert_array_equal(ws[2]["mask"], [True, False, False])
    np.testing.assert_array_equal(ws[3]["steps"]["action"], [0, 1, 0])  # a new episode: no crossing
    assert [w["mask"].sum() for w in windows(3, pad=False)(eps)] == [3, 3]
    starts = [w["steps"]["action"][0] for w in windows(4, stride=2)(eps[:1])]
    assert starts == [0, 2, 4]  # the window at 4 already reaches the end
    with pytest.raises(ConfigError):
        windows(0)


def test_windows_over_real_episodes(dataset):
    out, _, _ = dataset
    eps = rlds_episodes(out)
    total = sum(len(e["steps"]["reward"]) for e in eps)
    ws = list(Stream(eps) | windows(4))
    assert sum(int(w["mask"].sum()) for w in ws) == total
    for w in ws:
        first = w["steps"]["is_first"]
        assert not first[1:].any(), "a window never starts a second episode"


def test_empty_dataset_reads_as_zero_episodes(tmp_path):
    spec = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=2)
    with RldsWriter(tmp_path / "e", spec, env_id="X", policy_name="p", seed=0) as w:
        pass
    assert w.card["num_episodes"] == 0 and w.card["return_mean"] is None
    eps = rlds_episodes(tmp_path / "e", spec=spec)
    assert len(eps) == 0 and list(eps) == []
