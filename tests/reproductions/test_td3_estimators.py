"""`rillet reproduce td3-estimators`: the per-seed statistics (mean, standard error, final, area under the
curve) on hand-made curves, the figure, and the runs' configs. The sweep itself trains for hours."""

import os

import numpy as np

from rillet.reproductions.td3_estimators import plot_task, seed_statistics, td3_config


def test_seed_statistics_on_hand_made_curves():
    curves = [[(0, 0.0), (10, 10.0), (20, 20.0)], [(0, 2.0), (10, 6.0), (20, 10.0), (30, 99.0)]]
    s = seed_statistics(curves)  # cut to the shortest: 3 evaluations
    assert s["env_steps"] == [0.0, 10.0, 20.0] and s["seeds"] == 2
    np.testing.assert_allclose(s["mean"], [1.0, 8.0, 15.0])
    np.testing.assert_allclose(s["se"], [1.0, 2.0, 5.0])  # std (ddof 1) / sqrt(2) = |a - b| / 2
    assert s["final"] == [20.0, 10.0] and s["final_mean"] == 15.0 and s["final_se"] == 5.0
    np.testing.assert_allclose(s["auc"], [10.0, (4.0 * 10 + 8.0 * 10) / 20])  # trapezoids / span
    twice = seed_statistics([[(0, 1.0), (10, 2.0), (10, 4.0)]])  # a periodic and the final evaluation at 10
    assert twice["env_steps"] == [0.0, 10.0] and twice["final"] == [4.0]
    assert seed_statistics([[(5, 3.0)]])["auc"] == [3.0] and seed_statistics([[(5, 3.0)]])["final_se"] == 0.0


def test_figure_and_run_configs(tmp_path):
    stats = {"peng": seed_statistics([[(0, 1.0), (10, 3.0)], [(0, 2.0), (10, 5.0)]]),
             "retrace": seed_statistics([[(0, 1.0), (10, 2.0)]])}
    png = plot_task("CheetahRun-v1", stats, str(tmp_path / "fig.png"), "title")
    assert os.path.getsize(png) > 0
    config = td3_config("CheetahRun-v1", "tree_backup", 3, 50_000, str(tmp_path / "run"), 5_000, 5).validate()
    assert config.learner.estimator == "tree_backup" and config.seed == 3
    assert config.replay.sequence_period == config.learner.trace_length and config.replay.sampler == "uniform"
