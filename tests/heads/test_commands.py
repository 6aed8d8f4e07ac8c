"""python -m heads.predict and python -m heads.train: records, one-line errors, refusing to overwrite."""

from __future__ import annotations

import json

import pytest

from heads.predictor import MultiTaskPredictor
from heads.train import main as train_main

from conftest import DATA_DIR, require_data, run_module


@pytest.mark.slow
def test_predict_cli_prints_one_json_record_per_text():
    proc = run_module("heads.predict", "Who is the president of France?", "", "A tedious, joyless movie .")
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["text"] for r in records] == ["Who is the president of France?", "", "A tedious, joyless movie ."]
    assert set(records[0]) == {"text", "question_type", "sentiment", "entities"}
    assert records[0]["question_type"]["label"] == "HUM"
    assert records[2]["sentiment"]["label"] == "negative"
    assert records[1]["entities"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/folder", "hi"], "does not exist"),
        ([], "no texts given"),
        (["--input", "/no/such/file.txt"], "does not exist"),
    ],
)
@pytest.mark.slow
def test_predict_cli_errors_are_one_line(args, message):
    proc = run_module("heads.predict", *args)
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.slow
def test_train_cli_runs_saves_and_refuses_to_overwrite(tmp_path):
    require_data("")
    out = tmp_path / "run"
    args = [
        "--tasks",
        "question_type,ner",
        "--sentence-hidden",
        "32",
        "--limit",
        "question_type=64",
        "--limit",
        "ner=32",
        "--freeze",
        "layers:5",
        "--max-steps",
        "6",
        "--batch-size",
        "16",
        "--dev-limit",
        "48",
        "--quiet",
        "--output",
        str(out),
        "--data-dir",
        str(DATA_DIR),
    ]
    proc = run_module("heads.train", *args)
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert summary["steps"] == 6 and set(summary["scores"]["dev"]) == {"question_type", "ner"}
    assert sorted(p.name for p in out.iterdir()) == ["backbone.safetensors", "config.json", "heads.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert {t["name"]: t["hidden"] for t in config["tasks"]} == {"question_type": 32, "ner": None}
    assert config["training"]["command"].startswith("python -m heads.train --tasks question_type,ner")
    predicted = MultiTaskPredictor.from_folder(out).predict(["Where is Paris?"])[0]  # loads with its trained backbone
    assert set(predicted) == {"text", "question_type", "entities"}
    again = run_module("heads.train", *args)
    assert again.returncode == 2 and "--force" in again.stderr.decode()
    bad = run_module("heads.train", "--tasks", "topic", "--output", str(tmp_path / "x"))
    assert bad.returncode == 2 and "choose from" in bad.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr-heads", "nan"], "argument --lr-heads: must be a finite number >= 0, got nan"),
        (["--lr-heads", "-1"], "argument --lr-heads: must be a finite number >= 0, got -1.0"),
        (["--warmup", "nan"], "argument --warmup: must be a finite number >= 0 and <= 1, got nan"),
        (["--temperature", "inf"], "argument --temperature: must be a finite number > 0, got inf"),
        (["--dropout", "1"], "--dropout 1.0: give a probability in [0, 1)"),
        (["--loss-weight", "question_type=nan"], "--loss-weight 'question_type=nan': must be a finite number >= 0"),
        (["--limit", "ner=2.5"], "--limit 'ner=2.5': must be an integer >= 0, got '2.5'"),
        (["--seed", "-5"], "argument --seed: must be an integer >= 0 and <= 4294967295, got -5"),
        (["--sentence-lstm", "1000000000"], "argument --sentence-lstm: must be an integer >= 0 and <= 4096"),
        (["--batch-size", "1000000000000"], "argument --batch-size: must be an integer >= 1 and <= 4096"),
    ],
)
def test_train_refuses_non_finite_and_out_of_range_numbers_in_one_line(tmp_path, capsys, args, message):
    """--lr-heads nan, --loss-weight question_type=nan and --lr-heads -1 trained and saved all-NaN heads with
    status 0 (heads.predict then printed "score": NaN, which is not JSON); --warmup nan was "cannot convert float
    NaN to integer". Each is now one line naming the option, before any data or model is read."""
    try:
        status = train_main([*args, "--output", str(tmp_path / "m")])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    stderr = capsys.readouterr().err
    assert status == 2 and stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert not (tmp_path / "m").exists()
