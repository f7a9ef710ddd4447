"""rillet loads RLDS datasets that plain TFDS tooling wrote: here the `rlds` library's own
EpisodeWriter (tfds SequentialWriter, TFRecord), converted with `rillet dataset convert`."""

import numpy as np
import tensorflow_datasets as tfds
from rlds import rlds_types
from rlds.tfds.episode_writer import EpisodeWriter

from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import rlds_episodes
from rillet.pipelines.dataset_cli import convert


def write_with_rlds(directory, lengths=(3, 5, 2), seed=0):
    config = tfds.rlds.rlds_base.DatasetConfig(
        name="plain_rlds", observation_info=tfds.features.Tensor(shape=(4,), dtype=np.float32),
        action_info=tfds.features.Tensor(shape=(), dtype=np.int32),
        reward_info=tfds.features.Tensor(shape=(), dtype=np.float32),
        discount_info=tfds.features.Tensor(shape=(), dtype=np.float32))
    directory.mkdir()
    writer = EpisodeWriter(data_directory=str(directory), ds_config=config, max_episodes_per_file=2)
    rng = np.random.default_rng(seed)
    episodes = []
    for T in lengths:
        steps = [rlds_types.build_step(observation=rng.normal(size=4).astype(np.float32), action=np.int32(t % 2),
                                       reward=np.float32(t < T), discount=np.float32(t < T - 1),
                                       is_first=t == 0, is_last=t == T, is_terminal=t == T)
                 for t in range(T + 1)]
        writer.add_episode(rlds_types.build_episode(steps=steps, metadata={}))
        episodes.append(steps)
    writer.close()
    return episodes


def test_rlds_library_dataset_converts_and_loads(tmp_path):
    episodes = write_with_rlds(tmp_path / "plain")
    convert(str(tmp_path / "plain"), out=str(tmp_path / "ar"), to="array_record")
    source = rlds_episodes(str(tmp_path / "ar"))
    assert len(source) == len(episodes)
    got = sorted((source[i]["steps"] for i in range(len(source))), key=lambda s: len(s["reward"]))
    want = sorted(episodes, key=len)
    for g, w in zip(got, want):
        for field in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(g[field], np.stack([s[field] for s in w]), err_msg=field)
    batch = next(iter(rlds(str(tmp_path / "ar"), transform="transitions", batch_size=4, shuffle=False)))
    assert batch["observation"].shape == (4, 4) and batch["next_observation"].shape == (4, 4)
