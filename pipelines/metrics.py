"""Metrics sinks: JSON lines (one object per record) and TensorBoard event files (tensorboardX)."""

from __future__ import annotations

import json
import os
from typing import Mapping

import numpy as np


class MetricsWriter:
    """Writes scalar metrics to <run_dir>/metrics.jsonl and TensorBoard events under <run_dir>/tb."""

    def __init__(self, run_dir: str):
        from tensorboardX import SummaryWriter

        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = open(self.path, "a", buffering=1)
        self._tb = SummaryWriter(os.path.join(run_dir, "tb"))

    def write(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        scalars = {f"{prefix}{k}": float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}
        self._file.write(json.dumps({"step": int(step), **scalars}) + "\n")
        for k, v in scalars.items():
            self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    """Reads a JSON-lines file back as a list of dicts ([] if it does not exist yet)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """A tqdm progress bar (or nothing when disabled): ``add(n)``, ``note(key=value)``, ``close()``."""

    def __init__(self, enabled: bool, total: int, initial: int = 0, unit: str = "step", desc: str = ""):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True)

    def add(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, **kv) -> None:
        if self._bar is not None:
            self._bar.set_postfix(**kv)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
