"""Probe: tiny tasks that check a setup (every runner runs them; see tests/execution for its uses)."""


from framework import run_json


def _runner_case(cli, root):
    return ["probe", str(root / "out"), "--tasks", "30", "--stages", "2"], root / "out"


RUNNER_CASES = {"probe": _runner_case}


def test_every_task_of_both_stages_leaves_its_mark_in_order(tmp_path, cli):
    summary = run_json(cli, "probe", tmp_path / "out", "--tasks", "30", "--stages", "2", "--workers", "2", "--no-progress")
    assert summary["tasks"] == 60 and summary["ran"] == 60
    assert summary["stages"]["second"]["totals"] == {"probes": 30}
    marks = sorted(p.name for p in (tmp_path / "out" / "probe" / "second").iterdir())
    assert marks == sorted(str(i) for i in range(30))
