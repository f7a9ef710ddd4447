"""rlds(): Grain loader over RLDS datasets: transforms vs references, determinism, resume, errors."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rillet.datasets import rlds_encoding as E, rlds_transforms as T
from rillet.datasets.rlds_chunks import ChunkPlan
from rillet.datasets.rlds_loader import CorruptDatasetError, RldsRecords, rlds, rlds_loader
from rillet.datasets.rlds_reader import DatasetPathError, rlds_episodes, windows
from rillet.datasets.rlds_writer import RldsWriter
from rillet.datasets.specs import ArraySpec, StepSpec
from rillet.errors import ConfigError, SpecMismatchError

SPEC = StepSpec(ArraySpec((3,), "float32"), ArraySpec((), "int32"), num_actions=4,
                extras={"h": ArraySpec((2,), "float32")})


def episode(n, rng, ep_id=0):
    """One synthetic RLDS episode of n steps ([n, ...] per field)."""
    term = bool(rng.integers(2))
    discount = np.ones(n, np.float32)
    discount[-1] = 0.0  # the last step's discount is unused
    if n >= 2:
        discount[-2] = 0.0 if term else 1.0
    return {
        "observation": (ep_id * 1000 + np.arange(n * 3, dtype=np.float32).reshape(n, 3)),
        "action": rng.integers(0, 4, n).astype(np.int32),
        "reward": rng.normal(size=n).astype(np.float32),
        "discount": discount,
        "is_first": np.arange(n) == 0, "is_last": np.arange(n) == n - 1,
        "is_terminal": (np.arange(n) == n - 1) & term,
        "extras": {"h": rng.normal(size=(n, 2)).astype(np.float32)},
    }


def write_episodes(out, eps, **kw):
    """Writes whole episodes through RldsWriter (one env, one episode after another)."""
    with RldsWriter(out, SPEC, env_id="X", policy_name="p", seed=0, **kw) as w:
        for ep in eps:
            for t in range(len(ep["reward"])):
                w.write({k: (v[t:t + 1] if k != "extras" else {e: x[t:t + 1] for e, x in v.items()})
                         for k, v in ep.items()})
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    eps = [episode(int(n), rng, i) for i, n in enumerate(rng.integers(2, 30, 40))]
    return write_episodes(str(tmp_path_factory.mktemp("l") / "ds"), eps, max_episodes_per_shard=7), eps


def ref_nstep(ep, t, n, gamma):
    """Slow reference: loops over k and j."""
    last = len(ep["reward"]) - 1
    m = min(n, last - t)
    ret, disc = 0.0, 1.0
    for k in range(m):
        ret += disc * float(ep["reward"][t + k])
        disc *= gamma * float(ep["discount"][t + k])
    return ret, disc, t + m


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 25), min_size=1, max_size=5), st.integers(1, 8), st.integers(1, 6),
       st.booleans(), st.integers(1, 5), st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_windows_and_nstep_equal_slow_reference(lengths, length, stride, pad, n, gamma, seed):
    rng = np.random.default_rng(seed)
    eps = [episode(k, rng, i) for i, k in enumerate(lengths)]
    want = list(windows(length, stride, pad=pad)([{"steps": e} for e in eps]))
    counts = T.record_counts(np.array(lengths), "windows", length, stride, pad)
    got = [T.window(e, k * stride, length) for e, c in zip(eps, counts) for k in range(c)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g["mask"], w["mask"])
        for f in ("observation", "action", "reward", "is_first"):
            np.testing.assert_array_equal(g["steps"][f], w["steps"][f])
        np.testing.assert_array_equal(g["steps"]["extras"]["h"], w["steps"]["extras"]["h"])
    assert list(T.record_counts(np.array(lengths), "nstep")) == [k - 1 for k in lengths]
    for e in eps:
        for t in range(len(e["reward"]) - 1):
            got = T.nstep(e, t, n, gamma)
            ret, disc, boot = ref_nstep(e, t, n, gamma)
            assert got["reward"] == pytest.approx(ret, rel=1e-5, abs=1e-5)
            assert got["discount"] == pytest.approx(disc, rel=1e-5, abs=1e-6)
            np.testing.assert_array_equal(got["next_observation"], e["observation"][boot])
            assert got["is_terminal"] == e["is_terminal"][boot] and got["action"] == e["action"][t]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 25), min_size=1, max_size=5), st.sampled_from(T.TRANSFORMS), st.integers(1, 8),
       st.integers(1, 6), st.booleans(), st.integers(1, 5), st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_vectorised_gather_equals_per_record_functions(lengths, transform, window, stride, pad, n, gamma, seed):
    """rlds_transforms.gather (all records of a chunk at once, shuffled) == window/transition/nstep."""
    rng = np.random.default_rng(seed)
    eps = [episode(k, rng, i) for i, k in enumerate(lengths)]
    cols = {k: np.concatenate([e[k] for e in eps]) for k in eps[0] if k != "extras"}
    cols["extras"] = {"h": np.concatenate([e["extras"]["h"] for e in eps])}
    lens = np.array(lengths)
    counts = T.record_counts(lens, transform, window, stride, pad)
    ep = np.repeat(np.arange(len(eps)), counts)
    k = np.arange(len(ep)) - np.repeat(np.cumsum(counts) - counts, counts)
    order = rng.permutation(len(ep))
    got = T.gather(cols, np.cumsum(lens) - lens, lens, ep[order], k[order], transform, n=n, gamma=gamma,
                   window=window, stride=stride)
    for row, i in enumerate(order):
        e, t = eps[ep[i]], int(k[i])
        if transform == "windows":
            want = T.window(e, t * stride, window)
            np.testing.assert_array_equal(got["mask"][row], want["mask"])
            for f in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
                np.testing.assert_array_equal(got["steps"][f][row], want["steps"][f])
            np.testing.assert_array_equal(got["steps"]["extras"]["h"][row], want["steps"]["extras"]["h"])
            continue
        want = T.transition(e, t) if transform == "transitions" else T.nstep(e, t, n, gamma)
        for f in ("observation", "action", "next_observation", "is_terminal"):
            np.testing.assert_array_equal(got[f][row], want[f])
        np.testing.assert_array_equal(got["extras"]["h"][row], want["extras"]["h"])
        assert got["reward"][row] == pytest.approx(want["reward"], rel=1e-5, abs=1e-5)
        assert got["discount"][row] == pytest.approx(want["discount"], rel=1e-5, abs=1e-6)
        assert got["reward"].dtype == got["discount"].dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=12), st.integers(1, 7), st.integers(1, 3), st.booleans(),
       st.integers(0, 2**31))
def test_chunk_plan_reads_each_record_once_per_epoch(counts, size, shards, shuffle, seed):
    """Per epoch the shards' chunks partition the first shards * (N // shards) records of that
    epoch's episode order; chunks are at most `size`; orders are seeded and differ between epochs."""
    counts = np.array(counts)
    per_shard = counts.sum() // shards
    epochs = []
    for epoch in range(3):
        seen = []
        for s in range(shards):
            plan = ChunkPlan(counts, size, s, shards, shuffle, seed)
            assert plan.per_shard == per_shard and plan.chunks_per_epoch == -(-per_shard // size)
            for c in range(plan.chunks_per_epoch):
                positions, ep, k = plan.chunk(epoch, c)
                assert 0 < len(ep) <= size and np.all(k < counts[positions[ep]])
                seen += list(zip(positions[ep].tolist(), k.tolist()))
        perm, _ = plan.order(epoch)
        epoch_order = [(int(e), j) for e in perm for j in range(counts[e])][:shards * per_shard]
        assert sorted(seen) == sorted(epoch_order) and len(set(seen)) == len(seen)
        if not shuffle:
            assert seen == epoch_order
        epochs.append(seen)
    again = ChunkPlan(counts, size, shards - 1, shards, shuffle, seed)  # a fresh plan: the same chunks
    last_shard = []
    for c in range(again.chunks_per_epoch):
        positions, ep, k = again.chunk(2, c)
        last_shard += list(zip(positions[ep].tolist(), k.tolist()))
    assert last_shard == epochs[2][-again.per_shard:]


@pytest.mark.parametrize("transform,drop", [("windows", True), ("nstep", False)])
def test_resume_at_every_batch_across_chunks_and_epochs(data, transform, drop):
    """Chunks of 12 records (3 batches of 4): a state saved after any batch resumes exactly, also
    mid-chunk and across an epoch boundary; epochs differ, and a run reads every record once per epoch."""
    out, eps = data
    kw = dict(transform=transform, window=4, stride=3, n=2, batch_size=4, seed=5, num_epochs=2,
              shuffle_buffer=12, drop_remainder=drop)
    loader = rlds_loader(out, **kw)
    assert loader.plan.size == 12 and loader.plan.chunks_per_epoch > 3
    key = (lambda b: b["steps"]["observation"]) if transform == "windows" else (lambda b: b["observation"])
    it = iter(loader)
    full, states = [], []
    while True:
        states.append(it.get_state())
        try:
            full.append(key(next(it)))
        except StopIteration:
            break
    per_epoch = len(loader.records) - (len(loader.records) % 4 if drop else 0)
    rows = np.concatenate(full)
    assert len(rows) == 2 * per_epoch
    epoch1, epoch2 = list(map(bytes, rows[:per_epoch])), list(map(bytes, rows[per_epoch:]))
    assert epoch1 != epoch2 and (sorted(epoch1) == sorted(epoch2) or drop)
    if not drop:  # every record once per epoch
        want = [loader.records[i]["observation"] for i in range(len(loader.records))]
        assert sorted(epoch1) == sorted(map(bytes, want))
    for at in (1, 2, 3, 5, len(full) // 2, len(full) - 1, len(full)):
        resumed = rlds(out, **kw)
        resumed.set_state(states[at])
        rest = [key(b) for b in resumed]
        assert len(rest) == len(full) - at and all(np.array_equal(a, b) for a, b in zip(rest, full[at:]))


def test_decoder_matches_reader_and_varints(data):
    out, eps = data
    reader = rlds_episodes(out)
    for i in (0, 5, len(reader) - 1):
        got = T.decode_episode(reader.source[i], reader.layout)
        want = reader[i]["steps"]
        for k in ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(got[k], want[k])
            assert got[k].dtype == want[k].dtype
        np.testing.assert_array_equal(got["extras"]["h"], want["extras"]["h"])
    values = np.array([0, 1, 127, 128, 300, 2**40, -1, -(2**63)], np.int64)
    enc = bytearray()
    for v in values.view(np.uint64).tolist():
        while True:
            enc.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                break
    np.testing.assert_array_equal(E.decode_varints(bytes(enc)), values)


@pytest.mark.parametrize("transform", ["transitions", "nstep", "windows"])
def test_unshuffled_loader_reads_every_record_in_order(data, transform):
    out, eps = data
    kw = dict(transform=transform, n=3, gamma=0.9, window=4, stride=2)
    it = rlds(out, batch_size=1, shuffle=False, drop_remainder=False, **kw)
    got = list(it)
    if transform == "windows":
        want = list(windows(4, 2)([{"steps": e} for e in eps]))
        assert [g["mask"][0].sum() for g in got] == [w["mask"].sum() for w in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g["steps"]["observation"][0], w["steps"]["observation"])
    else:
        want = [(e, t) for e in eps for t in range(len(e["reward"]) - 1)]
        assert len(got) == len(want)
        for g, (e, t) in zip(got, want):
            np.testing.assert_array_equal(g["observation"][0], e["observation"][t])
            if transform == "nstep":
                ret, disc, boot = ref_nstep(e, t, 3, 0.9)
                assert g["reward"][0] == pytest.approx(ret, rel=1e-5, abs=1e-5)
                np.testing.assert_array_equal(g["next_observation"][0], e["observation"][boot])


def batches_equal(a, b):
    return all(np.array_equal(x["observation"], y["observation"]) for x, y in zip(a, b)) and len(a) == len(b)


def test_seed_determinism_and_resume_mid_epoch(data):
    out, _ = data
    kw = dict(transform="transitions", batch_size=16, seed=7, num_epochs=2)
    full = list(rlds(out, **kw))
    assert batches_equal(full, list(rlds(out, **kw)))
    assert not batches_equal(full, list(rlds(out, **dict(kw, seed=8))))
    it = rlds(out, **kw)
    for _ in range(5):
        next(it)
    state = it.get_state()
    rest = list(it)
    resumed = rlds(out, **kw)
    resumed.set_state(state)
    assert batches_equal(list(resumed), rest) and batches_equal(full[5:], rest)


def test_worker_processes_are_deterministic_and_resume(data):
    """Two worker processes (each batches its own share of the sampler's records): a resumed
    iterator continues exactly, and together they cover what one process reads."""
    out, _ = data
    kw = dict(transform="windows", window=4, batch_size=8, seed=3, worker_count=2)
    it = rlds(out, **kw)
    first = [next(it)["steps"]["observation"] for _ in range(3)]
    state = it.get_state()
    rest = [np.array(b["steps"]["observation"]) for b in it]
    resumed = rlds(out, **kw)
    resumed.set_state(state)
    again = [np.array(b["steps"]["observation"]) for b in resumed]
    assert len(again) == len(rest) > 0 and all(np.array_equal(a, b) for a, b in zip(again, rest))
    single = np.concatenate([b["steps"]["observation"] for b in rlds(out, **dict(kw, worker_count=0))])
    multi = np.concatenate(first + rest)
    assert abs(len(single) - len(multi)) < 16  # each worker drops its own incomplete batch


def test_shards_partition_the_records_and_min_return_filters(data):
    out, eps = data
    seen = []
    for shard in range(2):
        it = rlds(out, batch_size=1, shuffle=False, shard_index=shard, shard_count=2)
        seen.append({tuple(b["observation"][0]) for b in it})
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1])
    returns = sorted(float(e["reward"].sum(dtype=np.float64)) for e in eps)
    cut = returns[len(returns) // 2]
    records = RldsRecords(out, transform="transitions", min_return=cut)
    kept = [e for e in eps if float(e["reward"].sum(dtype=np.float64)) >= cut]
    assert len(records) == sum(len(e["reward"]) - 1 for e in kept)
    assert {float(records[i]["observation"][0]) // 1000 for i in range(len(records))} == {
        float(e["observation"][0, 0]) // 1000 for e in kept}


def test_bad_input_one_clear_error_each(data, tmp_path):
    out, eps = data
    with pytest.raises(DatasetPathError, match="not a TFDS dataset"):
        rlds(str(tmp_path))
    with pytest.raises(DatasetPathError, match="does not exist"):
        rlds(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        rlds(out, split="test")
    other = StepSpec(ArraySpec((8,), "float32"), ArraySpec((), "int32"), num_actions=4, extras=SPEC.extras)
    with pytest.raises(SpecMismatchError, match="observation: expected \\(8,\\)"):
        rlds(out, spec=other)
    with pytest.raises(ConfigError, match="window=64 is longer than every episode"):
        rlds(out, transform="windows", window=64)
    with pytest.raises(ConfigError, match="no episode .* has return >= 1000000"):
        rlds(out, min_return=1e6)
    with RldsWriter(tmp_path / "empty", SPEC, env_id="X", policy_name="p", seed=0):
        pass
    with pytest.raises(ConfigError, match="holds no episodes"):
        rlds(str(tmp_path / "empty"))
    bad = shutil.copytree(out, tmp_path / "bad")
    shard = sorted(n for n in os.listdir(bad) if "array_record" in n)
    os.remove(os.path.join(bad, shard[0]))
    with pytest.raises(DatasetPathError, match="missing"):
        rlds(str(bad))
    shutil.copy(os.path.join(out, shard[0]), os.path.join(bad, shard[0]))
    with open(os.path.join(bad, shard[1]), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(bad, shard[1])) // 2)
    with pytest.raises(CorruptDatasetError, match="truncated or corrupt"):
        rlds(str(bad))


def test_grain_path_works_when_tensorflow_cannot_import(data):
    out, _ = data
    script = textwrap.dedent("""
        import sys
        class NoTF:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    raise ImportError("tensorflow is blocked in this test")
        sys.meta_path.insert(0, NoTF())
        from rillet.datasets.rlds_loader import rlds
        n = sum(len(b["reward"]) for b in rlds(sys.argv[1], transform="nstep", batch_size=8, seed=1))
        w = next(rlds(sys.argv[1], transform="windows", window=4, batch_size=4))
        assert n > 0 and w["mask"].shape == (4, 4)
        print("OK", n, sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", script, out], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout and proc.stdout.strip().endswith("[]")


def test_reading_a_large_dataset_keeps_rss_flat(tmp_path):
    """~200 MB of image-like float observations (10 copies of a writer-made dataset merged): RSS after
    a warm-up stays within a fraction of the dataset size (it holds a few decoded episodes)."""
    import psutil

    from rillet.pipelines.dataset_cli import merge

    spec = StepSpec(ArraySpec((64, 64), "float32"), ArraySpec((), "int32"), num_actions=2)
    pool = np.random.default_rng(0).random((16, 4, 64, 64), dtype=np.float32)
    with RldsWriter(tmp_path / "base", spec, env_id="X", policy_name="p", seed=0) as w:
        for t in range(400):
            w.write({"observation": pool[t % 16] + t, "action": np.zeros(4, np.int32),
                     "reward": np.ones(4, np.float32), "discount": np.ones(4, np.float32),
                     "is_first": np.full(4, t % 20 == 0), "is_last": np.full(4, t % 20 == 19),
                     "is_terminal": np.zeros(4, bool), "extras": {}})
    copies = [str(tmp_path / f"base{i}") for i in range(10)]  # merge takes each dataset once
    for copy in copies:
        shutil.copytree(tmp_path / "base", copy, copy_function=os.link)
    big = str(tmp_path / "big")
    merge(copies, big)
    size = sum(os.path.getsize(os.path.join(big, n)) for n in os.listdir(big))
    assert size > 150e6
    proc = psutil.Process()
    warm, later, steps = [], [], 0
    for i, b in enumerate(rlds(big, transform="windows", window=10, batch_size=8, seed=0, read_threads=2,
                               prefetch=64)):
        steps += int(b["mask"].sum())
        (warm if i < 50 else later).append(proc.memory_info().rss)
    assert steps == 800 * 20 // 8 * 8  # every window of every episode (800 episodes, 2 windows each)
    growth = max(later) - max(warm)
    assert growth < 0.25 * size, f"RSS grew {growth / 1e6:.0f} MB while reading {size / 1e6:.0f} MB"
