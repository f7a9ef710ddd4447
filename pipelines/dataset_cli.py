"""`rillet dataset ...`: generate, inspect, merge, split and convert RLDS datasets.

    python -m rillet.pipelines.dataset_cli generate --env CartPole-v1 --policy random --episodes 100 --out d
    python -m rillet.pipelines.dataset_cli inspect d
    python -m rillet.pipelines.dataset_cli split d --out d2 --validation-fraction 0.1
    python -m rillet.pipelines.dataset_cli merge --inputs d e --out de
    python -m rillet.pipelines.dataset_cli convert d --out d_tfr --to tfrecord

`dataset_commands()` maps "dataset <name>" to these functions (for `rillet`). Merge, split and
convert copy serialized episodes record by record (nothing is re-encoded; convert --decode-images
decodes Image features to raw pixels once) into a
`rlds_finalise.DatasetDraft`, as the writer does: shards named like the writer's, the episode index,
built in ``<out>.incomplete-...`` and renamed when done.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
import tyro

from rillet import validation as check
from rillet.datasets import rlds_transforms as T
from rillet.datasets.rlds_finalise import DatasetDraft
from rillet.datasets.rlds_features import decode_images as decode_images_of
from rillet.datasets.rlds_features import array_spec, image_to_tensor, map_leaves
from rillet.datasets.rlds_reader import CARD_FILE, _shard_paths, check_complete, describe_features, read_step_layout
from rillet.errors import ConfigError

Positional = tyro.conf.Positional


def _info(path: str) -> dict:
    check_complete(path)
    try:
        with open(os.path.join(path, "dataset_info.json")) as f:
            return json.load(f)
    except OSError:
        raise ConfigError(f"'{path}' is not a TFDS dataset directory (no dataset_info.json).") from None


def _card(path: str) -> dict:
    p = os.path.join(path, CARD_FILE)
    return json.load(open(p)) if os.path.exists(p) else {}


def _records(path: str, info: dict, split: str) -> Iterator[bytes]:
    """Serialized episodes of `split`, in order, from ArrayRecord or TFRecord shards."""
    files = _shard_paths(path, info, split)
    if info.get("fileFormat", "tfrecord") == "array_record":
        from array_record.python.array_record_module import ArrayRecordReader

        for f in files:
            reader = ArrayRecordReader(f)
            for i in range(reader.num_records()):
                yield reader.read([i])[0]
            reader.close()
    else:
        import tensorflow as tf

        for record in tf.data.TFRecordDataset(files):
            yield record.numpy()


def _build(out: str, base: str, splits: dict[str, Callable[[], Iterator[bytes]]], file_format: str,
           card_extra: dict, per_shard: int, image_encoding: str | None = None) -> dict:
    """Writes a dataset with `splits` {name: records factory} and the features of `base` (images decoded
    to Tensors of `image_encoding`, "bytes" or "none", when given); returns its card, which lists every
    feature."""
    check.integer("", "episodes_per_shard", per_shard, low=1, fix="--episodes-per-shard")
    info, layout = _info(base), read_step_layout(base)
    with open(os.path.join(base, "features.json")) as f:
        features = json.load(f)
    if image_encoding:
        features = map_leaves(features, lambda leaf: image_to_tensor(leaf, image_encoding))
    index = {k: layout[k] for k in ("is_first", "reward") if k in layout}
    with DatasetDraft(out, info["name"], file_format, per_shard, option="--out") as draft:
        for split, records in splits.items():
            shards = draft.split(split)
            for record in records():
                steps = T.decode_episode(record, index, base)
                if image_encoding:
                    record = decode_images_of(record, layout, base, image_encoding)
                shards.write(record, len(steps["is_first"]),
                             float(steps["reward"].sum(dtype=np.float64)) if "reward" in steps else 0.0)
        return draft.commit(info, features, {**_card(base), **card_extra, "features": describe_features(features)})


def _split_counts(path: str, info: dict) -> dict[str, int]:
    return {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info.get("splits", [])}


def generate(env: str, out: str, policy: str = "random", episodes: int = 100, num_envs: int = 8, seed: int = 0,
             max_episode_steps: int = 0, file_format: Literal["array_record", "tfrecord"] = "array_record",
             progress: bool = True) -> dict:
    """Generates `episodes` episodes of `env` (any id of actors/environments.py) into a new RLDS dataset `out`.

    policy: "random" (uniform actions) or "checkpoint:PATH" (the evaluation policy of any agent, restored
    from a `rillet train-online` or `train-offline` run directory's latest checkpoint, or from one of its
    checkpoints/<step> folders; the run's environment must have `env`'s spec).
    """
    from tqdm import tqdm

    from rillet.actors.actor_loop import envpool_actor
    from rillet.actors.environments import make_batched_env
    from rillet.datasets.rlds_writer import RldsWriter

    if episodes < 1 or num_envs < 1:
        raise ConfigError(f"--episodes and --num-envs must be >= 1, got {episodes} and {num_envs}.")
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    pool = make_batched_env(env, num_envs, seed=seed, **kwargs)
    parts, params = _policy(policy, pool.spec, num_envs)
    bar = tqdm(total=episodes, unit="episode", disable=not progress, file=sys.stderr)
    with RldsWriter(out, pool.spec, env_id=env, policy_name=policy, seed=seed, file_format=file_format,
                    max_episodes=episodes) as writer:
        for step in envpool_actor(pool, parts.policy, lambda: params, parts.actor_state, seed=seed,
                                  observe=parts.observe):
            writer.write(step)
            bar.update(writer.num_episodes - bar.n)
            if writer.num_episodes >= episodes:
                break
    bar.close()
    pool.close()
    print(f"wrote {writer.card['num_episodes']} episodes, {writer.card['num_steps']} steps to {writer.out_dir}")
    return writer.card


def _policy(policy: str, spec, num_envs: int):
    """(ActorParts, params) of --policy: uniform random actions, or the evaluation policy of the run a
    `rillet train-online` / `train-offline` run directory (or one of its checkpoints/<step>) holds
    (`policy_loader.load_policy`: refused unless its environment has this one's spec)."""
    from rillet.actors.policies import random_policy
    from rillet.learners.agents import ActorParts
    from rillet.pipelines.policy_loader import load_policy

    if policy == "random":
        return ActorParts(random_policy(spec.num_actions, spec.action.shape), None), None
    if not policy.startswith("checkpoint:"):
        raise ConfigError(f"--policy must be 'random' or 'checkpoint:RUN_DIR', got {policy!r}.")
    loaded = load_policy(policy[len("checkpoint:"):], spec, num_envs)
    return loaded.parts, loaded.params


def inspect(path: Annotated[str, Positional], split: str = "train", histogram: str = "", steps: int = 3) -> dict:
    """Prints every feature (type, shape, dtype, encoding), counts, per-split sizes, the first `steps` steps
    of the first episode and its metadata; saves a return histogram PNG to `histogram` (default: <path>-returns.png)."""
    from rillet.datasets.rlds_loader import RldsRecords

    info, card = _info(path), _card(path)
    counts = _split_counts(path, info)
    records = RldsRecords(path, split)
    lengths, returns = records.lengths, records.returns
    layout = records.episodes.layout
    summary = {"path": os.path.abspath(path), "file_format": info.get("fileFormat"), "splits": counts,
               "features": describe_features(path),
               "layout": {k: [list(array_spec(v).shape), array_spec(v).dtype] for k, v in layout.items()},
               "env_id": card.get("env_id"), "policy": card.get("policy"), "split": split,
               "episodes": len(lengths), "steps": int(lengths.sum()),
               "length_min_mean_max": [int(lengths.min()), float(lengths.mean()), int(lengths.max())],
               "return_min_mean_max": [float(returns.min()), float(returns.mean()), float(returns.max())]}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary["histogram"] = histogram or os.path.abspath(path).rstrip("/") + "-returns.png"
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(returns, bins=min(50, max(5, len(returns) // 5)))
    ax.set(xlabel="episode return", ylabel="episodes", title=f"{card.get('env_id', '')} ({split})")
    fig.tight_layout()
    fig.savefig(summary["histogram"])
    plt.close(fig)
    first = records.episodes[0]
    print(json.dumps(summary, indent=2))
    print(f"first {steps} steps of episode 0:")
    for t in range(min(steps, len(first["steps"]["is_first"]))):
        print(T.tree_map(lambda x: _shown(x[t]), first["steps"]))
    if len(first) > 1:
        print("episode metadata:", T.tree_map(_shown, {k: v for k, v in first.items() if k != "steps"}))
    return summary


def _shown(x):
    """A value as inspect prints it: small arrays as lists, larger ones as <dtype shape>."""
    x = np.asarray(x)
    return x.tolist() if x.size <= 8 else f"<{x.dtype} {list(x.shape)}>"


def merge(inputs: list[str], out: str, file_format: Literal["array_record", "tfrecord"] = "array_record",
          episodes_per_shard: int = 1000) -> dict:
    """Concatenates datasets with identical features, split by split, into `out`."""
    infos = [_info(p) for p in inputs]
    layouts = [read_step_layout(p) for p in inputs]
    for p, lay in zip(inputs[1:], layouts[1:]):
        if lay != layouts[0]:
            raise ConfigError(f"'{p}' has features {sorted(lay.items())}, unlike '{inputs[0]}' "
                              f"{sorted(layouts[0].items())}; only datasets of one spec can be merged.")
    names = sorted({s for info in infos for s in _split_counts("", info)})
    splits = {}
    for name in names:
        parts = [(p, info) for p, info in zip(inputs, infos) if name in _split_counts(p, info)]
        splits[name] = lambda parts=parts, name=name: (r for p, i in parts for r in _records(p, i, name))
    card = _build(out, inputs[0], splits, file_format, {"merged_from": [os.path.abspath(p) for p in inputs]},
                  episodes_per_shard)
    print(f"merged {len(inputs)} datasets into {out}: {card['splits']}")
    return card


def split(path: Annotated[str, Positional], out: str, validation_fraction: float = 0.1, seed: int = 0,
          source_split: str = "train", episodes_per_shard: int = 1000) -> dict:
    """Splits `source_split` by episode into "train" and "validation" (a seeded random choice)."""
    info = _info(path)
    counts = _split_counts(path, info)
    if source_split not in counts:
        raise ConfigError(f"unknown split {source_split!r} in '{path}'; available: {sorted(counts)}.")
    n = counts[source_split]
    n_val = int(round(n * validation_fraction))
    if not 0 < validation_fraction < 1 or n_val in (0, n):
        raise ConfigError(f"--validation-fraction {validation_fraction} of {n} episodes leaves an empty split; "
                          "use a fraction in (0, 1) and a dataset with enough episodes.")
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng(seed).choice(n, n_val, replace=False)] = True

    def part(val: bool):
        return lambda: (r for r, v in zip(_records(path, info, source_split), is_val) if v == val)

    card = _build(out, path, {"train": part(False), "validation": part(True)},
                  info.get("fileFormat", "tfrecord"), {"split_from": os.path.abspath(path), "split_seed": seed},
                  episodes_per_shard)
    print(f"split {path} into {out}: {card['splits']}")
    return card


def convert(path: Annotated[str, Positional], out: str, to: Literal["array_record", "tfrecord"] = "array_record",
            episodes_per_shard: int = 1000, decode_images: bool = False) -> dict:
    """Copies every split into `to` shards (TFRecord <-> ArrayRecord) with the episode index.

    Records are copied as they are: the TF-free reader decodes every feature (Tensor, Scalar, Image,
    Text, dicts, episode metadata). --decode-images stores Image features as raw uint8 pixels instead
    (decoded once here; larger on disk, no decode when loading: see benchmarks/rlds_image_read.py)."""
    info = _info(path)
    splits = {s: (lambda s=s: _records(path, info, s)) for s in _split_counts(path, info)}
    card = _build(out, path, splits, to, {"converted_from": os.path.abspath(path)}, episodes_per_shard,
                  "bytes" if decode_images else None)
    print(f"converted {path} ({info.get('fileFormat', 'tfrecord')}) to {out} ({to}): {card['splits']}")
    return card


def dataset_commands() -> dict[str, Callable]:
    """{"generate": generate, ...}: the `rillet dataset ...` subcommands (tyro)."""
    return {"generate": generate, "inspect": inspect, "merge": merge, "split": split, "convert": convert}


def main(argv: list[str] | None = None) -> int:
    """`python -m rillet.pipelines.dataset_cli ...` is `rillet dataset ...`."""
    from rillet.pipelines.cli import main as rillet_main

    return rillet_main(["dataset", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
