"""The federated examples run as documented (tiny settings: the README's numbers come from
the full runs)."""

import json

import pytest
from cli_runner import ROOT, run_mpi, run_train

pytestmark = pytest.mark.timeout(300)
FEDERATED = ROOT / "examples" / "federated"


def test_fedavg_config_trains(tmp_path):
    out = tmp_path / "fedavg"
    done = run_train(["--config", str(FEDERATED / "digits_fedavg.toml"), "--rounds", "3",
                      "--out", str(out), "--quiet"], ranks=2)
    assert done.returncode == 0, done.stderr
    rounds = [json.loads(line)["round"] for line in (out / "metrics.jsonl").read_text()
              .splitlines()]
    assert rounds[-1] == 3
    assert json.loads((out / "summary.json").read_text())["config"]["mode"] == "fedavg"


def test_reproduction_script_writes_results(tmp_path):
    done = run_mpi([str(FEDERATED / "reproduce.py"), "--out", str(tmp_path), "--rounds", "2",
                    "--seeds", "0"], ranks=2)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results
    assert (tmp_path / "results.md").read_text().count("| iid |") == 2
