"""`rillet dataset ...`: generate, inspect, validate, merge, split and convert RLDS datasets.

    python -m rillet.pipelines.dataset_cli generate --env CartPole-v1 --policy random --episodes 100 --out d
    python -m rillet.pipelines.dataset_cli inspect d
    python -m rillet.pipelines.dataset_cli validate d        # exit code 0: every file and count checks out
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

import dataclasses
import json
import os
import sys
from typing import Annotated, Callable, Iterator, Literal

import numpy as np
import tyro

from rillet import validation as check
from rillet.datasets import rlds_transforms as T
from rillet.datasets.rlds_card import returns_histogram
from rillet.datasets.rlds_finalise import DatasetDraft, check_out_dir, check_version
from rillet.datasets.rlds_features import decode_images as decode_images_of
from rillet.datasets.rlds_features import array_spec, image_to_tensor, map_leaves
from rillet.datasets.rlds_integrity import VALIDATE_HINT
from rillet.datasets.rlds_reader import (CorruptDatasetError, _shard_paths, check_complete, describe_features,
                                         read_card, read_step_layout, shard_lengths)
from rillet.datasets.rlds_validate import shard_records, validate_dataset
from rillet.errors import ConfigError

Positional = tyro.conf.Positional
MAX_NUM_ENVS = 4096  # generate's --num-envs, as train-online's --actor.num-envs


def _info(path: str) -> dict:
    check_complete(path)
    try:
        with open(os.path.join(path, "dataset_info.json")) as f:
            return json.load(f)
    except OSError:
        raise ConfigError(f"'{path}' is not a TFDS dataset directory (no dataset_info.json).") from None


def _records(path: str, info: dict, split: str) -> Iterator[bytes]:
    """Serialized episodes of `split`, in order, from ArrayRecord or TFRecord shards; CorruptDatasetError
    naming the shard where one cannot be read to its end (truncated, or a block whose checksum fails) or
    holds fewer or more records than dataset_info.json lists."""
    listed = shard_lengths(info, split)
    for shard, want in zip(_shard_paths(path, info, split), listed):
        n = 0
        try:
            for n, record in enumerate(shard_records(shard, info.get("fileFormat", "tfrecord")), start=1):
                yield record
        except Exception as e:  # array_record / tf.data raise their own types with the C++ status text
            detail = str(e).strip()[:200] or type(e).__name__
            raise CorruptDatasetError(f"shard '{shard}' cannot be read after {n} of {want} records ({detail}): it "
                                      f"is truncated or corrupt. {VALIDATE_HINT.format(path=path)}") from None
        if n != want:
            raise CorruptDatasetError(f"shard '{shard}' holds {n} records but dataset_info.json lists {want}: it "
                                      f"is truncated or was replaced. {VALIDATE_HINT.format(path=path)}")


def _build(out: str, base: str, splits: dict[str, Callable[[], Iterator[bytes]]], file_format: str,
           card_extra: dict, per_shard: int, version: str = "", image_encoding: str | None = None) -> dict:
    """Writes a dataset with `splits` {name: records factory} and the features of `base` (images decoded
    to Tensors of `image_encoding`, "bytes" or "none", when given), at `version` ("": base's, carried
    forward); returns its card, which lists every feature."""
    check.integer("", "episodes_per_shard", per_shard, low=1, fix="--episodes-per-shard")
    info, layout = _info(base), read_step_layout(base)
    version = check_version("", version) if version else _version(base)
    info = {**info, "version": version}
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
        return draft.commit(info, features, {**read_card(base), **card_extra, "version": version})


def _version(path: str) -> str:
    """A dataset's version: its card's, else dataset_info.json's (tfds's), else "1.0.0"."""
    return str(read_card(path).get("version") or _info(path).get("version") or "1.0.0")


def _split_counts(path: str, info: dict) -> dict[str, int]:
    return {s["name"]: sum(int(n) for n in s.get("shardLengths", [])) for s in info.get("splits", [])}


def generate(env: str, out: str, policy: str = "random", episodes: int = 100, num_envs: int = 8, seed: int = 0,
             max_episode_steps: int = 0, file_format: Literal["array_record", "tfrecord"] = "array_record",
             version: str = "1.0.0", progress: bool = True) -> dict:
    """Generates `episodes` episodes of `env` (any id of actors/environments.py) into a new RLDS dataset `out`.

    policy: "random" (uniform actions) or "checkpoint:PATH" (the evaluation policy of any agent, restored
    from a `rillet train-online` or `train-offline` run directory's latest checkpoint, or from one of its
    checkpoints/<step> folders; the run's environment must have `env`'s spec). num_envs: environments
    stepped together, 1 to MAX_NUM_ENVS (checked, with `out`, before any starts). version: the dataset's
    version ("MAJOR.MINOR.PATCH"), kept by merge, split and convert. Besides the JSON card the directory
    gets a README.md card (environment, policy, counts, return histogram, features, file digests).
    """
    from tqdm import tqdm

    from rillet.actors.actor_loop import envpool_actor
    from rillet.actors.environments import make_batched_env
    from rillet.datasets.rlds_writer import RldsWriter

    check.integer("", "episodes", episodes, low=1, fix="--episodes")
    check.integer("", "num_envs", num_envs, 1, MAX_NUM_ENVS, fix="--num-envs (e.g. 8)")
    check_out_dir(out, "--out")  # before any environment starts; the writer's draft checks it again
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    pool = make_batched_env(env, num_envs, seed=seed, **kwargs)
    parts, params = _policy(policy, pool.spec, num_envs)
    bar = tqdm(total=episodes, unit="episode", disable=not progress, file=sys.stderr)
    with RldsWriter(out, pool.spec, env_id=env, policy_name=policy, seed=seed, file_format=file_format,
                    max_episodes=episodes, version=check_version("", version)) as writer:
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
    of the first episode and its metadata; saves a return histogram PNG to `histogram` (default: <path>-returns.png).

    Checks what the loader checks on open, for every split (CorruptDatasetError otherwise): each shard
    opens and holds the records dataset_info.json lists, sizes and sha256 digests against the card (splits
    up to rlds_integrity.DIGEST_LIMIT_BYTES), and the first episode of each shard against the index. A
    record damaged mid-shard in a larger split, or in a dataset without a card, is only found by
    `rillet dataset validate PATH`, which reads every record."""
    from rillet.datasets.rlds_loader import RldsRecords, open_episodes

    info, card = _info(path), read_card(path)
    counts = _split_counts(path, info)
    for other in sorted(set(counts) - {split}):
        open_episodes(path, other, None)
    records = RldsRecords(path, split)
    lengths, returns = records.lengths, records.returns
    layout = records.episodes.layout
    summary = {"path": os.path.abspath(path), "file_format": info.get("fileFormat"), "splits": counts,
               "features": describe_features(path),
               "layout": {k: [list(array_spec(v).shape), array_spec(v).dtype] for k, v in layout.items()},
               "env_id": card.get("env_id"), "policy": card.get("policy"), "version": _version(path), "split": split,
               "episodes": len(lengths), "steps": int(lengths.sum()),
               "length_min_mean_max": [int(lengths.min()), float(lengths.mean()), int(lengths.max())],
               "return_min_mean_max": [float(returns.min()), float(returns.mean()), float(returns.max())]}
    summary["histogram"] = histogram or os.path.abspath(path).rstrip("/") + "-returns.png"
    returns_histogram(summary["histogram"], {split: returns}, card.get("env_id", ""))
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
          episodes_per_shard: int = 1000, version: str = "") -> dict:
    """Concatenates two or more distinct datasets with identical features, split by split, into `out`, at
    their common version (or --version, required when the inputs' versions differ). The card's
    "merged_from" lists each input's path, env_id, policy, version and episodes."""
    _check_merge_inputs(inputs)
    infos = [_info(p) for p in inputs]
    versions = {p: _version(p) for p in inputs}
    if not version and len(set(versions.values())) > 1:
        raise ConfigError(f"the inputs have different versions {versions}; give the merged dataset's own with "
                          "--version MAJOR.MINOR.PATCH.")
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
    card = _build(out, inputs[0], splits, file_format, _merged_card(inputs, infos), episodes_per_shard, version)
    print(f"merged {len(inputs)} datasets into {out}: {card['splits']}")
    return card


def _check_merge_inputs(inputs: list[str]) -> None:
    """ConfigError unless `inputs` names at least two datasets, each once (paths compared resolved)."""
    if len(inputs) < 2:
        raise ConfigError(f"merge needs at least two --inputs, got {len(inputs)} ({inputs}). To copy or reshard "
                          "one dataset use `rillet dataset convert PATH --out OUT`.")
    seen: dict[str, str] = {}
    for p in inputs:
        real = os.path.realpath(p)
        if real in seen:
            raise ConfigError(f"--inputs names the dataset '{real}' twice (as '{seen[real]}' and '{p}'); merging a "
                              "dataset with itself would duplicate every episode. Name each dataset once.")
        seen[real] = p


def _merged_card(inputs: list[str], infos: list[dict]) -> dict:
    """The merged card's provenance: "merged_from" [{path, env_id, policy, version, episodes}] per input;
    "env_ids" and a "mixed: ..." policy where the inputs differ (env_id and spec stay the first input's)."""
    cards = [read_card(p) for p in inputs]
    sources = [{"path": os.path.abspath(p), "env_id": c.get("env_id"), "policy": c.get("policy"),
                "version": _version(p), "episodes": sum(_split_counts(p, i).values())}
               for p, c, i in zip(inputs, cards, infos)]
    extra: dict = {"merged_from": sources}
    env_ids = list(dict.fromkeys(s["env_id"] for s in sources))
    policies = list(dict.fromkeys(s["policy"] for s in sources))
    if len(env_ids) > 1:
        extra["env_ids"] = env_ids
        print(f"note: the inputs come from environments {env_ids} (identical features); the card's env_id, used "
              f"to evaluate on the data, is the first input's ({env_ids[0]}).")
    if len(policies) > 1:
        extra["policy"] = "mixed: " + ", ".join(str(p) for p in policies)
    return extra


def split(path: Annotated[str, Positional], out: str, validation_fraction: float = 0.1, seed: int = 0,
          source_split: str = "train", episodes_per_shard: int = 1000, version: str = "") -> dict:
    """Splits `source_split` by episode into "train" and "validation" (a seeded random choice); the
    version is the source's unless --version is given."""
    check.number("", "validation_fraction", validation_fraction, 0, 1, low_open=True, high_open=True,
                 fix="--validation-fraction (e.g. 0.1)")
    info = _info(path)
    counts = _split_counts(path, info)
    if source_split not in counts:
        raise ConfigError(f"unknown split {source_split!r} in '{path}'; available: {sorted(counts)}.")
    n = counts[source_split]
    n_val = int(round(n * validation_fraction))
    if n_val in (0, n):
        raise ConfigError(f"--validation-fraction {validation_fraction} of {n} episodes leaves an empty split; "
                          "use a fraction in (0, 1) and a dataset with enough episodes.")
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng(seed).choice(n, n_val, replace=False)] = True

    def part(val: bool):
        return lambda: (r for r, v in zip(_records(path, info, source_split), is_val) if v == val)

    card = _build(out, path, {"train": part(False), "validation": part(True)},
                  info.get("fileFormat", "tfrecord"), {"split_from": os.path.abspath(path), "split_seed": seed},
                  episodes_per_shard, version)
    print(f"split {path} into {out}: {card['splits']}")
    return card


def convert(path: Annotated[str, Positional], out: str, to: Literal["array_record", "tfrecord"] = "array_record",
            episodes_per_shard: int = 1000, decode_images: bool = False, version: str = "") -> dict:
    """Copies every split into `to` shards (TFRecord <-> ArrayRecord) with the episode index.

    Records are copied as they are: the TF-free reader decodes every feature (Tensor, Scalar, Image,
    Text, dicts, episode metadata). --decode-images stores Image features as raw uint8 pixels instead
    (decoded once here; larger on disk, no decode when loading: see benchmarks/rlds_image_read.py).
    The version is the source's unless --version is given."""
    info = _info(path)
    splits = {s: (lambda s=s: _records(path, info, s)) for s in _split_counts(path, info)}
    card = _build(out, path, splits, to, {"converted_from": os.path.abspath(path)}, episodes_per_shard, version,
                  "bytes" if decode_images else None)
    print(f"converted {path} ({info.get('fileFormat', 'tfrecord')}) to {out} ({to}): {card['splits']}")
    return card


def validate(path: Annotated[str, Positional], json_out: str = "") -> dict:
    """Reads every shard, episode and feature of the dataset and checks them against dataset_info.json,
    features.json, the episode index and the card (counts, sizes, sha256 digests, spec, version); prints
    one line per check (and writes them as JSON to `json_out`, if given). Exit code 0 when every check
    passes, 2 (with the failed checks named) when one does not."""
    findings = validate_dataset(path)
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'}  {f.check}: {f.detail}")
    report = {"path": os.path.abspath(path), "ok": all(f.ok for f in findings),
              "checks": [dataclasses.asdict(f) for f in findings]}
    if json_out:
        with open(json_out, "w") as out:
            json.dump(report, out, indent=2)
    if not report["ok"]:
        failed = [f.check for f in findings if not f.ok]
        raise CorruptDatasetError(f"'{path}' failed {len(failed)} check(s): {', '.join(failed)} (details above). "
                                  "Regenerate or re-download the dataset, or restore the named files.")
    print(f"{path}: every check passed.")
    return report


def dataset_commands() -> dict[str, Callable]:
    """{"generate": generate, ...}: the `rillet dataset ...` subcommands (tyro)."""
    return {"generate": generate, "inspect": inspect, "merge": merge, "split": split, "convert": convert,
            "validate": validate}


def main(argv: list[str] | None = None) -> int:
    """`python -m rillet.pipelines.dataset_cli ...` is `rillet dataset ...`."""
    from rillet.pipelines.cli import main as rillet_main

    return rillet_main(["dataset", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
