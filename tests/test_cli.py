"""`qa-pipeline train | retrain` as a user runs them: a YAML config, overrides, printed results, exit codes."""

from __future__ import annotations

import json

import yaml

from qa_lib.cli import main


def test_train_then_retrain_from_the_command_line(prefect_server, tiny_model, tmp_path, capsys):
    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out").model_dump(mode="json")))
    store = ["--store", str(tmp_path / "store")]

    assert main(["train", str(config), "n_best_size=10", *store]) == 0
    out = capsys.readouterr().out
    assert "metrics: exact=" in out and "HasAns_f1=" in out
    assert f"model_dir: {tmp_path / 'out' / 'model'}" in out
    assert (tmp_path / "out" / "model" / "config.json").exists()

    pub = tmp_path / "pub"
    assert main(["retrain", str(config), f"publish_target={pub}", *store]) == 0
    pointer = json.loads((pub / "champion.json").read_text())
    assert f"promoted: {pointer['location']}" in capsys.readouterr().out
    assert main(["retrain", str(config), f"publish_target={pub}", "promote_margin=5", *store]) == 0
    assert "not promoted: f1" in capsys.readouterr().out
    assert json.loads((pub / "champion.json").read_text()) == pointer


def test_command_line_errors_are_one_message_and_exit_2(prefect_server, tiny_model, tmp_path, capsys):
    from tests.flow_helpers import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_model, tmp_path / "out").model_dump(mode="json")))
    assert main(["train", str(config), "doc_stride=500"]) == 2
    assert "doc_stride (500) must be smaller than max_length" in capsys.readouterr().err
    assert main(["retrain", str(config), "--store", str(tmp_path / "store")]) == 2
    assert "retrain needs publish_target" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
