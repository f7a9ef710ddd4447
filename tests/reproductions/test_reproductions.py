"""`rillet reproduce NAME --help` for every reproduction, and the curve table and figure of finished
runs. pac-vs-bc, pac-scaling and pac-seeds run end to end on tiny datasets in
tests/pipelines/test_offline.py (beside the offline runner's tests, which share its compiled update);
the online reproductions train for minutes and are not run in the suite."""

import json
import os

import pytest
import tyro

from rillet.reproductions import REPRODUCTIONS
from rillet.reproductions.common import compare_curves, plot_runs


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_every_reproduction_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tyro.extras.subcommand_cli_from_dict(REPRODUCTIONS, args=[name, "--help"], prog="rillet reproduce")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "usage" in out and name in out and "--out" in out


def test_curves_of_finished_runs_make_one_table_and_figure(tmp_path):
    curves = {"a": [(5000, 20.0), (10000, 80.0), (15000, 60.0)], "b": [(5000, 10.0)]}
    for name, points in curves.items():
        os.makedirs(tmp_path / name)
        with open(tmp_path / name / "curve.jsonl", "w") as f:
            f.writelines(json.dumps({"env_steps": x, "return_mean": y}) + "\n" for x, y in points)
    png = plot_runs(tuple(str(tmp_path / n) for n in curves), out=str(tmp_path / "curves.png"), target=50.0)
    assert os.path.getsize(png) > 0
    summary = {"env_steps": 15000, "updates": 7, "wall_s": 1.0}
    runs = {name: {"summary": summary, "curve": points} for name, points in curves.items()}
    table = compare_curves(str(tmp_path / "cmp"), "both", runs, "title", target=None)
    assert table["a"]["best_return"] == 80.0 and table["a"]["final_return"] == 60.0
    with open(tmp_path / "cmp" / "both.json") as f:
        assert json.load(f) == table
    assert os.path.getsize(tmp_path / "cmp" / "both.png") > 0

