"""hindsight-door: the cue only at step 0, the key only at step REVEAL, the reward's sign from the door
and the key, the registered env id's spec."""

import importlib

import numpy as np

from rillet.actors.environments import env_step_spec

door = importlib.import_module("rillet.reproductions.himo_hindsight")  # the package's name is the function


def test_the_key_is_shown_only_later_and_decides_the_reward():
    rights = []
    for seed in range(40):
        env = door.HindsightDoor(seed)
        obs = [env.reset().observation]
        cue = obs[0][:door.CUE]
        key = int(cue[0] * cue[1] > 0)
        first = seed % 2
        steps = [env.step(first)] + [env.step(1 - first) for _ in range(door.LENGTH - 1)]
        obs += [s.observation for s in steps]
        assert all(np.all(o[:door.CUE] == 0) for o in obs[1:]) and np.any(cue != 0)
        assert [o[door.CUE] for o in obs] == [2.0 * key - 1.0 if t == door.REVEAL else 0.0 for t in range(len(obs))]
        assert all(s.reward == 0.0 for s in steps[:-1]) and steps[-1].last() and steps[-1].discount == 0.0
        assert env.chose_right_door() == (first == key)
        rights.append((steps[-1].reward, first == key))
    right = np.array([r for r, ok in rights if ok])
    wrong = np.array([r for r, ok in rights if not ok])
    assert right.mean() > wrong.mean() and len(right) > 5 and len(wrong) > 5


def test_registered_by_name():
    spec = env_step_spec(door.register())
    assert door.register() == door.ENV_ID and spec.num_actions == 2 and spec.observation.shape == (door.CUE + 2,)
    np.testing.assert_allclose(door.noise_floor(1.0), door.NOISE ** 2)
