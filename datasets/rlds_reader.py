"""Reads RLDS datasets (rillet's `rlds_writer`'s, and those tfds or rlds wrote as ArrayRecord) without TensorFlow.

    eps = rlds_episodes("/data/cartpole_random")       # random access: len(eps), eps[i]
    eps[0] == {"steps": {"observation": [T+1, *obs], "action": [T+1, *act], "reward": [T+1],
                         "discount": [T+1], "is_first": [T+1], "is_last": [T+1],
                         "is_terminal": [T+1], "extras": {name: [T+1, ...]}},
               **episode_metadata}     # e.g. "episode_metadata": {"file_path": b"..."}, if the dataset has any

Records come from Grain's `ArrayRecordDataSource` over the shard files that dataset_info.json
lists; each record (a serialized ``tf.train.Example``) is parsed with the TF-free protobuf class
that tensorflow_datasets ships (`tensorflow_datasets.proto.tf_example_pb2`) and decoded with the
layout read from features.json (`rlds_features`: Tensors, Scalars, PNG/JPEG Images, Text, nested
dicts as nested dicts). No TensorFlow import happens in this module.

`episodes_to_transitions` and `windows` are pure-numpy transforms over episodes.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from rillet.datasets.rlds_features import array_spec, describe, flatten
from rillet.datasets.specs import StepSpec
from rillet.errors import ConfigError, SpecMismatchError

CARD_FILE = "rillet_card.json"
INCOMPLETE_MARKER = "RILLET_INCOMPLETE"  # present in a directory a writer has not closed
INCOMPLETE_INFIX = ".incomplete-"  # temporary directory: <out_dir>.incomplete-<pid>-<hex>
STEP_FIELDS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal")


class DatasetPathError(ConfigError):
    """A path that is not a (complete, readable) rillet/TFDS RLDS dataset, or where a new one cannot be
    written (`rlds_finalise.check_out_dir`)."""


class IncompleteDatasetError(DatasetPathError):
    """A dataset directory whose writer never closed it (killed or crashed)."""


class CorruptDatasetError(DatasetPathError):
    """A dataset whose files disagree with each other or cannot be read: a truncated or replaced shard,
    an episode index or card that disagrees with the shards or features (`rillet dataset validate`)."""


def _recovery_message(tmp: str, out_dir: str) -> str:
    return (
        f"'{tmp}' is an incomplete RLDS dataset: its writer was stopped before close() (killed or "
        f"crashed), so episodes and metadata may be missing. To recover, delete it "
        f"(rm -rf '{tmp}') and re-run the writer for '{out_dir}'; only a cleanly closed writer "
        "renames its temporary directory to the final path."
    )


def check_complete(path: str) -> None:
    """Raises IncompleteDatasetError for an unclosed writer directory (or its missing target)."""
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, INCOMPLETE_MARKER)) or INCOMPLETE_INFIX in os.path.basename(path):
        target = os.path.basename(path).split(INCOMPLETE_INFIX)[0]
        raise IncompleteDatasetError(_recovery_message(path, os.path.join(os.path.dirname(path), target)))
    if not os.path.exists(path):
        parent, name = os.path.split(path)
        leftovers = sorted(
            n for n in (os.listdir(parent) if os.path.isdir(parent) else ())
            if n.startswith(name + INCOMPLETE_INFIX)
        )
        if leftovers:
            raise IncompleteDatasetError(
                f"'{path}' does not exist, but {leftovers} beside it are unfinished writes. "
                + _recovery_message(os.path.join(parent, leftovers[0]), path)
            )
        raise DatasetPathError(f"'{path}' does not exist. Pass the directory an rlds_writer closed.")


def read_features(path: str) -> tuple[dict, dict, dict]:
    """(steps {"observation/image": ArraySpec | Feature, ...}, episode {"episode_metadata/id": ...},
    classes {"steps/...": pythonClassName}) from features.json (see `rlds_features`)."""
    try:
        with open(os.path.join(path, "features.json")) as f:
            top = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetPathError(f"'{path}' has no readable features.json ({e!r}).") from None
    return parse_features(top, path)


def parse_features(top: Mapping[str, Any], path: str) -> tuple[dict, dict, dict]:
    """`read_features` of a loaded features.json."""
    try:
        top = top["featuresDict"]["features"]
        steps = top["steps"]["sequence"]["feature"]
    except (KeyError, TypeError) as e:
        raise DatasetPathError(f"'{path}' features.json has no 'steps' Dataset feature ({e!r}); it is not "
                               "an RLDS dataset.") from None
    layout: dict = {}
    classes: dict = {}
    flatten(steps, "", layout)
    episode: dict = {}
    flatten({"featuresDict": {"features": {k: v for k, v in top.items() if k != "steps"}}}, "", episode, classes)
    flatten(steps, "steps", {}, classes)
    missing = [k for k in STEP_FIELDS if k not in layout and not any(n.startswith(k + "/") for n in layout)]
    if missing:
        raise SpecMismatchError(f"'{path}' steps lack RLDS field(s) {missing}; has {sorted(layout)}.")
    return layout, episode, classes


def read_step_layout(path: str) -> dict:
    """Flat {"observation": ArraySpec, ..., "extras/name": ArraySpec} from features.json; encoded
    features (images, text) are `rlds_features.Feature`s."""
    return read_features(path)[0]


def describe_features(path_or_features: str | Mapping[str, Any]) -> dict:
    """{"steps/observation/image": {"type", "shape", "dtype", "encoding"}, "episode_metadata/id": ...}
    of a dataset directory or a loaded features.json."""
    if isinstance(path_or_features, str):
        layout, episode, classes = read_features(path_or_features)
    else:
        layout, episode, classes = parse_features(path_or_features, "features.json")
    out = {f"steps/{k}": describe(v, classes.get(f"steps/{k}", "")) for k, v in layout.items()}
    out.update({k: describe(v, classes.get(k, "")) for k, v in episode.items()})
    return out


def _flat_spec(spec: StepSpec) -> dict:
    flat = {k: v for k, v in spec.fields().items() if k != "extras"}
    flat.update({f"extras/{k}": v for k, v in spec.extras.items()})
    return flat


def shard_filename(template: str, dataset: str, split: str, file_format: str, index: int,
                   num_shards: int | None = None) -> str:
    """A shard's file name from a TFDS filepathTemplate ({DATASET}, {SPLIT}, {FILEFORMAT},
    {SHARD_INDEX} and, if the template has them, {NUM_SHARDS} and {SHARD_X_OF_Y}; 5 digits each)."""
    name = (template.replace("{DATASET}", dataset).replace("{SPLIT}", split).replace("{FILEFORMAT}", file_format)
            .replace("{SHARD_INDEX}", f"{index:05d}"))
    if num_shards is None:
        return name
    return (name.replace("{NUM_SHARDS}", f"{num_shards:05d}")
            .replace("{SHARD_X_OF_Y}", f"{index:05d}-of-{num_shards:05d}"))


def shard_lengths(info: Mapping[str, Any], split: str) -> list[int]:
    """Episodes per shard of `split`, as dataset_info.json lists them ([] for an unknown split)."""
    return [int(n) for s in info.get("splits", []) if s["name"] == split for n in s.get("shardLengths", [])]


def read_card(path: str) -> dict:
    """The dataset's rillet card (rillet_card.json), or {} where there is none (tfds's, rlds's datasets)."""
    try:
        with open(os.path.join(path, CARD_FILE)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def _shard_paths(path: str, info: Mapping[str, Any], split: str) -> list[str]:
    """The shard files of `split` that dataset_info.json lists, by its own template (so datasets
    written with any template load); DatasetPathError if one is missing."""
    splits = {s["name"]: s for s in info.get("splits", [])}
    if split not in splits:
        raise ConfigError(f"unknown split {split!r} in '{path}'; available: {sorted(splits)}.")
    s = splits[split]
    count = len(s.get("shardLengths", []))
    template = s.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}-of-{NUM_SHARDS}")
    files = []
    for i in range(count):
        full = os.path.join(path, shard_filename(template, info["name"], split, info.get("fileFormat", "tfrecord"),
                                                 i, count))
        if not os.path.exists(full):
            raise DatasetPathError(f"shard '{full}' listed in dataset_info.json is missing.")
        files.append(full)
    return files


class RldsEpisodes:
    """Random-access episodes of one split (a Grain RandomAccessDataSource: len, [i]).

    Attributes: `source` (the grain ArrayRecordDataSource of serialized records), `layout`
    (flat field -> ArraySpec), `spec` (StepSpec from the card, or None), `card` (dict or {}),
    `shard_starts` [shards] (the episode id each shard begins with).
    """

    def __init__(self, path: str, split: str = "train", spec: StepSpec | None = None):
        check_complete(path)
        info_file = os.path.join(path, "dataset_info.json")
        if not os.path.isdir(path) or not os.path.exists(info_file):
            raise DatasetPathError(
                f"'{path}' is not a TFDS dataset directory (no dataset_info.json). Pass the directory "
                "an rlds_writer closed (or a tfds version directory)."
            )
        with open(info_file) as f:
            info = json.load(f)
        if info.get("fileFormat", "tfrecord") != "array_record":
            raise ConfigError(
                f"'{path}' is stored as {info.get('fileFormat', 'tfrecord')!r}; the TF-free reader needs "
                f"array_record. Convert it once: rillet dataset convert {path} --out OUT --to array_record "
                "(or read it with tfds.builder_from_directory(path).as_dataset())."
            )
        self.path, self.split = path, split
        self.layout, self.episode_layout, _ = read_features(path)
        self.card = read_card(path)
        self.spec = StepSpec.from_json(self.card["spec"]) if "spec" in self.card else None
        if spec is not None:
            want, got = _flat_spec(spec), {k: array_spec(v) for k, v in self.layout.items()}
            diffs = [f"{k}: expected {want[k].shape} {want[k].dtype}, dataset has "
                     + (f"{got[k].shape} {got[k].dtype}" if k in got else "nothing")
                     for k in sorted(want) if got.get(k) != want[k]]
            diffs += [f"{k}: not in the spec" for k in sorted(set(got) - set(want))]
            if diffs:
                raise SpecMismatchError(
                    f"dataset '{path}' does not match the given StepSpec ({spec.env_id or 'unnamed env'}): "
                    + "; ".join(diffs) + ". Use data written for this environment and agent."
                )
        files = _shard_paths(path, info, split)
        lengths = shard_lengths(info, split)
        self.shard_starts = np.cumsum([0] + lengths[:-1])[:len(lengths)]  # [shards] first episode of each
        import grain.python as grain

        try:
            self.source = grain.ArrayRecordDataSource(files) if files else []
        except Exception as e:  # array_record reads every shard's footer at open: a truncated one fails here
            detail = str(e).strip()[:200] or type(e).__name__
            raise CorruptDatasetError(f"the {split!r} shards of '{path}' cannot be opened ({detail}): one is truncated "
                                      f"or corrupt. Run `rillet dataset validate {path}` to name it.") from None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return self.decode(self.source[index])

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def decode(self, record: bytes) -> dict:
        """Serialized tf.train.Example -> {"steps": {field: [T+1, ...], "extras": {...}}, **episode
        metadata} (nested dicts as the features nest them; metadata values without a step axis)."""
        from rillet.datasets.rlds_transforms import decode_episode

        steps = decode_episode(record, self.layout, self.path, self.episode_layout)
        episode = steps.pop("episode", {})
        return {"steps": steps, **_first(episode)}


def _first(tree):
    return {k: _first(v) for k, v in tree.items()} if isinstance(tree, dict) else tree[0]


def rlds_episodes(path: str, split: str = "train", spec: StepSpec | None = None) -> RldsEpisodes:
    """Source: the episodes of `split` under `path`; checks them against `spec` when given."""
    return RldsEpisodes(os.fspath(path), split, spec)


def episodes_to_transitions(episodes: Iterable[Mapping]) -> Iterator[dict]:
    """Per episode, its T transitions t -> t+1 as arrays with leading axis T:

    observation [T, *obs], action [T, *act], reward [T], discount [T], next_observation
    [T, *obs], is_terminal [T] (the next step is terminal), extras {name: [T, ...]} (at t).
    The last step's action, reward and discount (ignored by EnvPool) are dropped.
    """
    for ep in episodes:
        s = ep["steps"]
        yield {
            "observation": s["observation"][:-1],
            "action": s["action"][:-1],
            "reward": s["reward"][:-1],
            "discount": s["discount"][:-1],
            "next_observation": s["observation"][1:],
            "is_terminal": s["is_terminal"][1:],
            "extras": {k: v[:-1] for k, v in s.get("extras", {}).items()},
        }


def windows(length: int, stride: int | None = None, *, pad: bool = True) -> Callable[[Iterable], Iterator[dict]]:
    """Transform: episodes -> fixed windows {"steps": {field: [length, ...]}, "mask": [length]}.

    Windows start every `stride` (default `length`) steps of each episode and never cross
    episodes. With pad=True the tail window is zero-padded and mask marks the real steps
    (False on padding); with pad=False windows shorter than `length` are dropped.
    """
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise ConfigError(f"windows needs length >= 1 and stride >= 1, got {length}, {stride}.")

    def cut(x: np.ndarray, start: int) -> np.ndarray:
        piece = x[start:start + length]
        if len(piece) < length:
            piece = np.concatenate([piece, np.zeros((length - len(piece),) + x.shape[1:], x.dtype)])
        return piece

    def stage(episodes: Iterable[Mapping]) -> Iterator[dict]:
        for ep in episodes:
            s = ep["steps"]
            n = len(s["is_first"])
            for start in range(0, n, stride):
                if not pad and start + length > n:
                    break
                yield {
                    "steps": {k: ({e: cut(v, start) for e, v in x.items()} if k == "extras" else cut(x, start))
                              for k, x in s.items()},
                    "mask": np.arange(start, start + length) < n,
                }
                if start + length >= n:  # this window reached the episode's end
                    break

    return stage

