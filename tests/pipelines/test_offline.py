"""`rillet train-offline` (PAC from RLDS datasets, one task per dataset): a short two-task run writes
checkpoints / metrics / PNG / summary and reports per-task greedy returns; resume continues bit for
bit; bad inputs raise clear errors. Every run uses the same PAC config and batch shapes so that
`pac.update` and the greedy policies compile once for the whole module: the reproductions' PAC options
(PAC_OPTIONS), so that pac-vs-bc's alpha 0.1 run and pac-scaling's run reuse that compile too (only
pac-vs-bc's alpha 0.5 and BC settings compile again)."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tyro

from rillet.actors.actor_loop import envpool_actor
from rillet.actors.envpool_env import BatchedEnv
from rillet.datasets.rlds_reader import DatasetPathError
from rillet.datasets.rlds_writer import RldsWriter
from rillet.errors import CheckpointError, ConfigError, SpecMismatchError
from rillet.pipelines.dataset_cli import generate
from rillet.pipelines.metrics import read_jsonl
from rillet.pipelines.offline import (MixedBatches, OfflineConfig, open_tasks, param_count, train_offline,
                                      train_offline_cmd)
from rillet.reproductions.pac_offline import PAC_ALPHA, PAC_POLYAK_TAU, PAC_V_MAX, PAC_V_MIN

EPISODE_STEPS = 12
# The PAC options pac-scaling and pac-vs-bc's PAC alpha 0.1 run train with (at a constant learning rate):
# the module's runs use them, so those runs at this batch size need no compile of their own.
PAC_OPTIONS = dict(alpha=PAC_ALPHA, learning_rate=3e-4, target_polyak_tau=PAC_POLYAK_TAU, v_min=PAC_V_MIN,
                   v_max=PAC_V_MAX)
BATCH = 8


def _uniform(dim):
    @jax.jit
    def policy(params, obs, state, key):
        return jax.random.uniform(key, (obs.shape[0], dim), jnp.float32, -1.0, 1.0), {}, state

    return policy


def write_random(env_id, out, episodes=5, seed=0, corrupt=False):
    """Uniform-random continuous actions, episodes capped at EPISODE_STEPS; corrupt: NaN rewards."""
    pool = BatchedEnv(env_id, 2, seed=seed, max_episode_steps=EPISODE_STEPS)
    with RldsWriter(out, pool.spec, env_id=env_id, policy_name="uniform", seed=seed, max_episodes=episodes) as w:
        for step in envpool_actor(pool, _uniform(pool.spec.action.shape[0]), lambda: None, None, seed=seed):
            if corrupt:
                step = {**step, "reward": np.full_like(step["reward"], np.nan)}
            w.write(step)
            if w.num_episodes >= episodes:
                break
    pool.close()
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline_data")
    return (write_random("PointMassEasy-v1", str(root / "pointmass")),  # obs 4, act 2
            write_random("Pendulum-v1", str(root / "pendulum"), seed=1))  # obs 3, act 1


def config(data, run_dir, **kw):
    base = dict(data=tuple(data), size="test", batch_size=BATCH, **PAC_OPTIONS, num_steps=4, log_every_steps=1,
                eval_every_steps=2, eval_episodes=2, eval_max_episode_steps=EPISODE_STEPS,
                checkpoint_every_steps=4, validation_fraction=0.2, validation_batches=2, run_dir=str(run_dir),
                progress=False)
    return OfflineConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def short_run_and_copy(data, tmp_path_factory):
    cfg = config(data, tmp_path_factory.mktemp("run") / "b")
    summary = train_offline(cfg)
    # test_resume_continues_bit_identically trains the run further in place: a copy keeps it as it finished
    finished = str(tmp_path_factory.mktemp("finished") / "b")
    shutil.copytree(cfg.run_dir, finished)
    return cfg, summary, finished


@pytest.fixture(scope="module")
def short_run(short_run_and_copy):
    """(config, summary) of a finished 4-update run (evaluated at 2 and 4, checkpointed at 4)."""
    return short_run_and_copy[:2]


@pytest.fixture(scope="module")
def finished_run(short_run_and_copy):
    """A copy of the short run's directory as it finished, whatever other tests do to the run since."""
    return short_run_and_copy[2]


def test_mixed_batches_equal_share_padded(data, tmp_path):
    cfg = config(data, tmp_path, n_step=3)
    tasks = open_tasks(cfg.data)
    assert [(t.env_id, t.obs_size, t.action_size) for t in tasks] == [("PointMassEasy-v1", 4, 2), ("Pendulum-v1", 3, 1)]
    mixed = MixedBatches(list(cfg.data), tasks, "train", cfg, seed=0)
    b = next(mixed)
    assert b["observation"].shape == (8, 4) and b["action"].shape == (8, 2) and b["reward"].shape == (8,)
    assert b["task_id"].tolist() == [0] * 4 + [1] * 4
    assert (b["observation"][4:, 3] == 0).all() and (b["action"][4:, 1] == 0).all()  # padding
    assert (b["discount"] <= 0.99 ** 1 + 1e-6).all()  # n-step bootstrap discount includes gamma^m
    state = mixed.get_state()
    ahead = [next(mixed) for _ in range(3)]
    mixed.set_state(state)
    again = [next(mixed) for _ in range(3)]
    for x, y in zip(ahead, again):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_short_run_writes_everything(short_run):
    cfg, summary = short_run
    run = cfg.run_dir
    assert summary["steps"] == 4 and summary["skipped_total"] == 0
    assert [t["env_id"] for t in summary["tasks"]] == ["PointMassEasy-v1", "Pendulum-v1"]
    for t in summary["tasks"]:
        assert np.isfinite(t["eval"]["return_mean"]) and t["eval"]["episodes"] == 2
        assert t["data_return_mean"] is not None
    assert np.isfinite(summary["final_validation"]["loss"])
    assert sorted(int(s) for s in os.listdir(os.path.join(run, "checkpoints")) if s.isdigit()) == [4]
    records = read_jsonl(summary["metrics"])
    assert any("learner/loss" in r and "learner/skipped_total" in r for r in records)
    assert any("validation/loss" in r for r in records)
    assert any("eval/Pendulum-v1/return_mean" in r for r in records)
    assert [e["step"] for e in read_jsonl(summary["evals"])] == [2, 4]
    # throughput: loader vs learner rows/s (first, compiling update not timed) and the loader's share of the loop
    for k in ("loader_rows_per_s", "learner_rows_per_s", "loader_wait_fraction"):
        assert np.isfinite(summary[k]) and summary[k] > 0, (k, summary[k])
    assert 0 <= summary["loader_wait_fraction"] <= 1
    assert summary["loader_rows_per_s"] >= summary["learner_rows_per_s"]  # the loop waits for at most all of it
    timed = [r for r in records if "time/loader_wait_fraction" in r]
    assert [r["step"] for r in timed] == [2, 3, 4] and all(0 <= r["time/loader_wait_fraction"] <= 1 for r in timed)
    assert all(r["time/loader_rows_per_s"] > 0 and "time/updates_per_s" in r for r in timed)
    with open(summary["curves"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(run, "summary.json")) as f:
        saved = json.load(f)
    assert saved["steps"] == 4 and saved["loader_wait_fraction"] == summary["loader_wait_fraction"]
    assert os.listdir(os.path.join(run, "tb"))
    # held-out episodes come from a split copy: train and validation are disjoint
    assert sorted(os.listdir(os.path.join(run, "data"))) == ["task0-split0.2-seed0", "task1-split0.2-seed0"]


def test_a_finished_run_is_re_evaluated_with_another_action(short_run, finished_run, tmp_path):
    """eval_action is not part of training: a finished run (the short run, 4 updates, evaluated at 2 and
    4 with the mean action) resumes at num_steps and only re-evaluates."""
    cfg, first = short_run
    shutil.copytree(finished_run, tmp_path / "copy")  # also after the directory moved (its split data with it)
    cfg = dataclasses.replace(cfg, run_dir=str(tmp_path / "copy"))
    again = train_offline(dataclasses.replace(cfg, eval_action="mode"))
    assert (first["eval_action"], again["eval_action"], again["steps"]) == ("mean", "mode", 4)
    assert [(e["step"], e["eval_action"]) for e in read_jsonl(again["evals"])] == [(2, "mean"), (4, "mean"),
                                                                                   (4, "mode")]
    assert again["final_validation"] == first["final_validation"]  # same state, same held-out batches


def _saved_arrays(run_dir, step):
    """The learner-state arrays of checkpoint `step`, as saved (no template, no re-initialisation)."""
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(os.path.join(run_dir, "checkpoints", str(step), "state"))
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def test_resume_continues_bit_identically(data, short_run, tmp_path):
    cfg, _ = short_run  # trained 4 steps, checkpointed at 4; restart from it and train 4 more
    resumed = train_offline(dataclasses.replace(cfg, num_steps=8))
    straight_cfg = dataclasses.replace(cfg, num_steps=8, run_dir=str(tmp_path / "a"))
    straight = train_offline(straight_cfg)  # 4 steps, checkpoint, 4 more in one process
    assert resumed["steps"] == straight["steps"] == 8

    def learner(summary):
        return [{k: v for k, v in r.items() if k.startswith("learner/")} for r in read_jsonl(summary["metrics"])
                if r["step"] > 4 and any(k.startswith("learner/") for k in r)]

    a, b = learner(resumed), learner(straight)
    assert len(a) == 4 and a == b  # exact float equality of every logged learner metric
    assert resumed["final_validation"] == straight["final_validation"]
    assert [t["eval"] for t in resumed["tasks"]] == [t["eval"] for t in straight["tasks"]]
    x, y = _saved_arrays(cfg.run_dir, 8), _saved_arrays(straight_cfg.run_dir, 8)
    assert len(x) == len(y) > 0
    for (px, vx), (py, vy) in zip(x, y):
        assert px == py
        np.testing.assert_array_equal(np.asarray(vx), np.asarray(vy))
    assert [e["step"] for e in read_jsonl(resumed["evals"])] == [2, 4, 6, 8]
    again = train_offline(dataclasses.replace(cfg, num_steps=8))  # nothing left: re-evaluates only
    assert again["final_validation"] == resumed["final_validation"]
    assert again["wall_s"] == resumed["wall_s"] and again["learner_rows_per_s"] == resumed["learner_rows_per_s"]

    with pytest.raises(CheckpointError, match="different config"):
        train_offline(dataclasses.replace(cfg, num_steps=10, alpha=0.5))


def test_nan_batches_are_skipped_and_counted(data, tmp_path):
    bad = write_random("Pendulum-v1", str(tmp_path / "nan"), seed=2, corrupt=True)
    summary = train_offline(config((data[0], bad), tmp_path / "run", num_steps=2, eval_episodes=0,
                                   validation_fraction=0.0))
    assert summary["skipped_total"] == 2 and summary["final_validation"] is None
    assert [r["learner/skipped_total"] for r in read_jsonl(summary["metrics"]) if "learner/loss" in r] == [1, 2]


def test_bad_inputs(data, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetPathError, match="not a TFDS dataset"):
        train_offline(config((data[0], str(tmp_path / "empty")), tmp_path / "r1"))
    with pytest.raises(DatasetPathError, match="does not exist"):
        train_offline(config((str(tmp_path / "missing"),), tmp_path / "r2"))
    cartpole = str(tmp_path / "cartpole")
    generate("CartPole-v1", cartpole, episodes=1, num_envs=1, max_episode_steps=5, progress=False)
    with pytest.raises(SpecMismatchError, match="continuous"):
        train_offline(config((data[0], cartpole), tmp_path / "r3"))
    for field, kw in (("batch_size", {"batch_size": 7}), ("agent", {"agent": "dqn"}), ("size", {"size": "huge"}),
                      ("data", {"data": ()}), ("alpha", {"alpha": 1.5}), ("num_steps", {"num_steps": 0}),
                      ("validation_fraction", {"validation_fraction": 1.0}),
                      ("target_polyak_tau", {"target_polyak_tau": 0.0}), ("kl_epsilon", {"kl_epsilon": -0.1}),
                      ("eval_action", {"eval_action": "argmax"}), ("compute_dtype", {"compute_dtype": "float16"}),
                      ("attention", {"attention": "cudnn"})):  # cudnn with the default float32 compute
        with pytest.raises(ConfigError, match=field):
            dataclasses.replace(config(data, tmp_path / "r4"), **kw).validate()
    assert not os.path.exists(tmp_path / "r4")


def test_cli_options_and_sizes(capsys):
    cfg = tyro.cli(OfflineConfig, args=["--data", "a", "b", "--size", "cpu-d32", "--num-steps", "5", "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:  # the command as `rillet train-offline` will register it
        tyro.extras.subcommand_cli_from_dict({"train-offline": train_offline_cmd}, args=["train-offline", "--help"])
    assert exit_info.value.code == 0 and "--validation-fraction" in capsys.readouterr().out
    assert cfg.data == ("a", "b") and cfg.size == "cpu-d32" and cfg.num_steps == 5 and not cfg.progress
    gpu = tyro.cli(OfflineConfig, args=["--data", "a", "b", "--size", "cpu-d32", "--num-steps", "5", "--no-progress",
                                        "--compute-dtype", "bfloat16", "--attention", "cudnn"])
    assert gpu.pac_config().compute_dtype == "bfloat16" and gpu.pac_config().attention == "cudnn"
    assert gpu.fingerprint() == cfg.fingerprint()  # execution choices: a run may resume with either
    # learning-rate decay: cosine over num_steps, which then joins the resume fingerprint
    decay = dataclasses.replace(cfg, learning_rate_decay=True)
    assert cfg.pac_config().learning_rate_decay_steps == 0 and decay.pac_config().learning_rate_decay_steps == 5
    assert "num_steps" not in cfg.fingerprint() and decay.fingerprint()["num_steps"] == 5
    counts = [param_count(s, (4, 3), (2, 1)) for s in ("test", "cpu-d32", "cpu-d64", "cpu-d128")]
    assert counts == sorted(counts) and counts[0] < 20_000 < counts[1] and counts[-1] > 500_000


def test_pac_vs_bc_and_scaling_experiments_write_their_tables(data, tmp_path):
    from rillet.reproductions.pac_offline import pac_seeds, pac_vs_bc
    from rillet.reproductions.pac_scaling import pac_scaling

    # Small sizes, and a constant learning rate: its PAC alpha 0.1 run is then the module's PAC config and
    # reuses its compiled update (pac.update compiles once per PAC config; only alpha 0.5 and BC compile
    # here). The decay option's mapping is checked in test_cli_options_and_sizes, the schedule in test_pac.
    vs = pac_vs_bc(data, out=str(tmp_path / "vs"), num_steps=2, size="test", batch_size=BATCH, eval_episodes=2,
                   eval_max_episode_steps=EPISODE_STEPS, n_step=1, validation_fraction=0.2,
                   learning_rate_decay=False)
    names = {"PAC (alpha 0.1)", "PAC (alpha 0.5)", "BC (alpha 1)"}
    for task, row in vs["table"].items():
        assert set(row) == names | {"data_mean"} and all(np.isfinite(v) for v in row.values())
        assert set(vs["stderr"][task]) == names and all(v >= 0 for v in vs["stderr"][task].values())
    assert os.path.getsize(tmp_path / "vs" / "pac_vs_bc.png") > 0
    assert sorted(os.listdir(tmp_path / "vs")) == ["bc", "pac-alpha0.1", "pac-alpha0.5", "pac_vs_bc.json",
                                                   "pac_vs_bc.png"]
    # one size keeps the suite's time (the sizes' parameter counts are ordered in test_cli_options_and_sizes);
    # at the module's batch size, n_step and validation split its PAC config is the module's (PAC_OPTIONS)
    rows = pac_scaling(data, out=str(tmp_path / "sc"), sizes=("test",), num_steps=2, batch_size=BATCH, n_step=1,
                       validation_fraction=0.2)
    assert rows["test"]["params"] > 0 and all(np.isfinite(r["loss"]) for r in rows.values())
    assert os.path.getsize(tmp_path / "sc" / "pac_scaling.png") > 0

    # pac-seeds reads the finished runs: each setting's seed-0 return is its final evaluation above.
    runs = tuple(str(tmp_path / "vs" / name) for name in ("bc", "pac-alpha0.1", "pac-alpha0.5"))
    seeds = pac_seeds(runs, out=str(tmp_path / "seeds"))
    assert set(seeds) == {"BC", "PAC alpha 0.1", "PAC alpha 0.5"}
    for task, row in vs["table"].items():
        assert seeds["PAC alpha 0.1"]["per_seed"][0][task] == row["PAC (alpha 0.1)"]
        assert seeds["BC"]["per_seed"][0][task] == row["BC (alpha 1)"]
    assert os.path.getsize(tmp_path / "seeds" / "pac_seeds.png") > 0
    with pytest.raises(ConfigError, match="the runs differ in"):  # no evaluation, other options: not comparable
        pac_seeds(runs + (str(tmp_path / "sc" / "test"),), out=str(tmp_path / "seeds2"))
    with pytest.raises(ConfigError, match="give the run directories"):
        pac_seeds((), out=str(tmp_path / "seeds3"))
