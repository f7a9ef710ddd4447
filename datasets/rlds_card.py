"""The dataset card for people: ``README.md`` and a return histogram beside ``rillet_card.json``.

    write_card_markdown(directory, card, {"train": [ret_0, ...]})   # README.md, rillet_returns.png

The markdown holds what someone given the directory needs before loading it: the environment, the
policy and seed that made the episodes, the version, counts per split, the return distribution, every
feature (type, shape, dtype, encoding), where it came from (converted / merged / split from), each
file's size and SHA-256, and how to check and load it. The JSON card stays the source of truth.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

MARKDOWN_FILE = "README.md"
HISTOGRAM_FILE = "rillet_returns.png"
PROVENANCE = {"converted_from": "converted from", "merged_from": "merged from", "split_from": "split from",
              "split_seed": "split seed"}


def write_card_markdown(directory: str, card: Mapping, returns: Mapping[str, Sequence[float]]) -> str:
    """Writes README.md (and the histogram PNG of `returns` per split) into `directory`; returns its path."""
    plotted = returns_histogram(os.path.join(directory, HISTOGRAM_FILE), returns, card.get("env_id") or "")
    lines = _header(card) + _counts(card, returns, plotted) + _features(card) + _files(card) + _usage()
    path = os.path.join(directory, MARKDOWN_FILE)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _header(card: Mapping) -> list[str]:
    policy = f" from policy `{card['policy']}`" if card.get("policy") else ""
    lines = [f"# {card.get('env_id') or 'RLDS'} episodes{policy}", "",
             "An RLDS dataset in TFDS format (rillet's card; the JSON twin is `rillet_card.json`).", "",
             "| | |", "|---|---|"]
    rows = [("version", card.get("version")), ("environment", card.get("env_id")), ("policy", card.get("policy")),
            ("seed", card.get("seed")), ("file format", card.get("file_format")),
            ("written by", f"rillet {card['rillet_version']}" if card.get("rillet_version") else None)]
    rows += [(label, card.get(key)) for key, label in PROVENANCE.items()]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows if v is not None]
    return lines + [""]


def _counts(card: Mapping, returns: Mapping[str, Sequence[float]], plotted: bool) -> list[str]:
    lines = ["## Episodes", "", "| split | episodes | steps | return mean | min | max |", "|---|---|---|---|---|---|"]
    files = card.get("files", {})
    for split, values in returns.items():
        r = np.asarray(values, np.float64)
        stats = [f"{r.mean():.4g}", f"{r.min():.4g}", f"{r.max():.4g}"] if len(r) else ["-"] * 3
        lines.append(f"| {split} | {len(r)} | {files.get(split, {}).get('steps', '-')} | " + " | ".join(stats) + " |")
    if plotted:
        lines += ["", f"![episode returns]({HISTOGRAM_FILE})"]
    return lines + [""]


def _features(card: Mapping) -> list[str]:
    lines = ["## Features", "", "| feature | type | shape | dtype | encoding |", "|---|---|---|---|---|"]
    for name, f in sorted(card.get("features", {}).items()):
        lines.append(f"| `{name}` | {f['type']} | {f['shape']} | {f['dtype']} | {f['encoding']} |")
    return lines + [""]


def _files(card: Mapping) -> list[str]:
    lines = ["## Files", "", "| split | file | bytes | sha256 |", "|---|---|---|---|"]
    for split, files in card.get("files", {}).items():
        lines += [f"| {split} | `{s['file']}` | {s['bytes']} | `{s['sha256']}` |" for s in files["shards"]]
        lines.append(f"| {split} | `{files['index']}` (episode index) | | `{files['index_sha256']}` |")
    return lines + [""]


def _usage() -> list[str]:
    return ["## Check and load", "", "```", "rillet dataset validate DIR      # every shard, episode, count and digest",
            "rillet dataset inspect DIR", "```", "", "```python", "from rillet.datasets.rlds_loader import rlds",
            'batches = rlds("DIR", transform="windows", window=32, batch_size=64, seed=0)',
            "# or, with TensorFlow: tfds.builder_from_directory(\"DIR\").as_dataset(split=\"train\")", "```"]


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_source(v) if isinstance(v, Mapping) else f"`{v}`" for v in value)
    return f"`{value}`" if isinstance(value, str) and os.sep in value else str(value)


def _source(entry: Mapping) -> str:
    """One input of a merge: "`path` (env, policy)"."""
    return f"`{entry.get('path')}` ({entry.get('env_id')}, {entry.get('policy')})"


def returns_histogram(path: str, returns: Mapping[str, Sequence[float]], title: str) -> bool:
    """Saves a histogram of the finite episode returns of every split; False (nothing written) when there
    are none."""
    returns = {split: np.asarray(v, np.float64)[np.isfinite(np.asarray(v, np.float64))] for split, v in returns.items()}
    if not any(len(v) for v in returns.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for split, values in returns.items():
        if len(values):
            ax.hist(values, bins=min(50, max(5, len(values) // 5)), alpha=0.7, label=f"{split} ({len(values)})")
    ax.set(xlabel="episode return", ylabel="episodes", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
