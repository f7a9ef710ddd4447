"""NGU's reward-free pre-training (`NGUConfig.reward_free`, behaviour transfer): the extrinsic reward and the
prev_reward core input have no effect on the loss, the targets or the updated networks, while the intrinsic
reward still does; without the flag they do; an evaluation policy with no intrinsic weight is refused."""

import dataclasses

import jax
import numpy as np
import pytest

from rillet.errors import ConfigError
from rillet.learners import ngu
from tests.learners.test_ngu import SMALL, SPEC, batch

FREE = dataclasses.replace(SMALL, reward_free=True, eval_policy_index=SMALL.num_policies - 1)


def _updated(config, data):
    state = ngu.init(jax.random.PRNGKey(0), SPEC, config)
    return ngu.update(state, data, config)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _rewarded(data, seed):
    """`data` with other extrinsic rewards (and prev_reward inputs), of another scale."""
    rng = np.random.default_rng(seed)
    extras = {**data["extras"], "prev_reward": 100 * rng.normal(size=data["reward"].shape).astype(np.float32)}
    return {**data, "reward": 100 * rng.normal(size=data["reward"].shape).astype(np.float32), "extras": extras}


def test_the_extrinsic_reward_has_no_effect_when_reward_free():
    data = batch(seed=1, policy_index=[3, 2, 3])
    state_a, metrics_a = _updated(FREE, data)
    state_b, metrics_b = _updated(FREE, _rewarded(data, 7))
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    for a, b in zip(_leaves(state_a), _leaves(state_b)):
        np.testing.assert_array_equal(a, b)
    # the same batch with its rewards zeroed by hand gives the same update (what the learner sees)
    zero = {**data, "reward": np.zeros_like(data["reward"]),
            "extras": {**data["extras"], "prev_reward": np.zeros_like(data["extras"]["prev_reward"])}}
    state_c, _ = _updated(FREE, zero)
    for a, c in zip(_leaves(state_a), _leaves(state_c)):
        np.testing.assert_array_equal(a, c)


def test_the_intrinsic_reward_still_drives_the_loss_and_the_extrinsic_one_does_without_the_flag():
    data = batch(seed=2, policy_index=[3, 3, 3])
    other_intrinsic = {**data, "extras": {**data["extras"],
                                          "prev_intrinsic_reward": data["extras"]["prev_intrinsic_reward"] + 5}}
    assert float(_updated(FREE, data)[1]["loss"]) != float(_updated(FREE, other_intrinsic)[1]["loss"])
    rewarded = dataclasses.replace(FREE, reward_free=False)
    assert float(_updated(rewarded, data)[1]["loss"]) != float(_updated(rewarded, _rewarded(data, 7))[1]["loss"])


def test_without_extrinsic_reward_zeroes_only_the_reward_and_its_input():
    data = batch(seed=3)
    free = ngu.without_extrinsic_reward(data)
    assert not np.any(np.asarray(free["reward"])) and not np.any(np.asarray(free["extras"]["prev_reward"]))
    np.testing.assert_array_equal(free["extras"]["prev_intrinsic_reward"], data["extras"]["prev_intrinsic_reward"])
    np.testing.assert_array_equal(free["observation"], data["observation"])


def test_a_reward_free_evaluation_policy_without_intrinsic_weight_is_refused():
    with pytest.raises(ConfigError, match="eval_policy_index"):
        dataclasses.replace(SMALL, reward_free=True, eval_policy_index=0).validate()
    with pytest.raises(ConfigError, match="reward_free"):
        dataclasses.replace(FREE, reward_free="yes").validate()
    FREE.validate()
