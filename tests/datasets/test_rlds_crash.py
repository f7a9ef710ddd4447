"""kill -9 of a writer at random moments: a complete dataset holding every episode it reported,
or no dataset (an incomplete directory the reader and loader refuse with a recovery message)."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rillet.datasets.rlds_loader import rlds
from rillet.datasets.rlds_reader import INCOMPLETE_INFIX, DatasetPathError, IncompleteDatasetError, rlds_episodes

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from rillet.datasets.specs import ArraySpec, StepSpec
    from rillet.datasets.rlds_writer import RldsWriter
    spec = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=2)
    w = RldsWriter(sys.argv[1], spec, env_id="X", policy_name="p", seed=0, max_episodes_per_shard=2,
                   flush_every=1)
    print("ready", flush=True)
    for t in range(int(sys.argv[2])):  # env i, episode k: observation = 1000 * (2k + i) + step
        ep, step = divmod(t, 5)
        w.write({"observation": np.array([[1000 * (2 * ep) + step] * 3, [1000 * (2 * ep + 1) + step] * 3],
                                         np.float32),
                 "action": np.zeros(2, np.int32), "reward": np.ones(2, np.float32),
                 "discount": np.ones(2, np.float32), "is_first": np.full(2, step == 0),
                 "is_last": np.full(2, step == 4), "is_terminal": np.zeros(2, bool), "extras": {}})
    card = w.close()
    print("closed", card["num_episodes"], flush=True)
    time.sleep(60)
""")


def test_kill_minus_nine_never_leaves_a_torn_dataset(tmp_path):
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    outcomes = []
    for trial in range(5):
        out = str(tmp_path / f"d{trial}")
        ticks = 600
        proc = subprocess.Popen([sys.executable, "-u", "-c", WRITER, out, str(ticks)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.5) if trial else 4.0)  # trial 0: after close, surely
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        reported = [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("closed")]
        if os.path.exists(out):  # complete: exactly the episodes reported, each intact
            eps = [e["steps"] for e in rlds_episodes(out)]
            assert reported == [len(eps)] == [ticks // 5 * 2]
            ids = sorted(int(e["observation"][0, 0]) // 1000 for e in eps)
            assert ids == list(range(len(eps)))
            for e in eps:
                base = e["observation"][0, 0]
                np.testing.assert_array_equal(e["observation"][:, 0], base + np.arange(5))
                assert e["is_first"][0] and e["is_last"][-1] and len(e["reward"]) == 5
            assert sum(len(b["reward"]) for b in rlds(out, batch_size=4)) == len(eps) * 4
            outcomes.append("complete")
        else:  # nothing reported; refused with a recovery message, before and after a listing
            assert reported == []
            leftovers = [n for n in os.listdir(tmp_path) if n.startswith(f"d{trial}{INCOMPLETE_INFIX}")]
            for path in [out] + [os.path.join(tmp_path, n) for n in leftovers]:
                with pytest.raises(IncompleteDatasetError if leftovers else DatasetPathError,
                                   match="rm -rf" if leftovers else "does not exist"):
                    rlds_episodes(path)
                with pytest.raises(DatasetPathError):
                    rlds(path)
            outcomes.append("incomplete")
    print(outcomes)
    assert outcomes[0] == "complete"
