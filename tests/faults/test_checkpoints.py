"""The checkpoint folder: every file a checkpoint brings is read as hostile input.

Before: a config.json whose numbers hang the load or
give NaN vectors, NaN weights and a zero int8 scale that gave NaN vectors with exit 0, malformed
metadata that gave tracebacks, lengths read by a different rule in each file, and a modules.json path
that led out of the folder. Each must be one WeightsError line naming the file and the field.

The cases load damaged copies of a tiny random checkpoint (conftest.write_tiny_checkpoint) in this
process; the command's exit status and single line are checked through its main() in this process
(faultkit.drive), and once in a real subprocess, for the config that used to hang.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minilm import SentenceEncoder
from minilm.model.classifier import BertForSequenceClassification
from minilm.model.encoder import BertConfig
from minilm.model.loading import bert_config
from minilm.weights import WeightsError, load_checkpoint, sha256_of
from minilm.weights.cross_encoder import load_cross_encoder
from minilm.weights.int8_scales import FILE_NAME, load_int8_scales

from conftest import ROOT, TINY_CONFIG
from faultkit import drive, error_line

MAX_MESSAGE = 600  # characters: a message names a few things and says how many more, whatever the file holds


def copy_of(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    """Merge `changes` into the JSON object at `path` (NaN and Infinity are written as JSON's extensions)."""
    raw = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**raw, **changes}))


def refused(load, folder: Path, *needles: str) -> str:
    """The one-line WeightsError that loading `folder` gives, checked to hold every needle and to be short."""
    with pytest.raises(WeightsError) as caught:
        load(str(folder), verify=False)
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_MESSAGE, message[:3000]
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --------------------------------------------------------------------------- config.json's numbers (4, 8, 12)


@pytest.mark.parametrize(
    "changes, needle",
    [
        # before: 1e9 layers grew RSS without end, 10,000 took 17 s and gave a 7.3 MB line
        ({"num_hidden_layers": 10**9}, '"num_hidden_layers" must be an integer >= 1 and <= 256, got 1000000000'),
        ({"num_hidden_layers": 10_000}, '"num_hidden_layers" must be an integer >= 1 and <= 256, got 10000'),
        # in range, but not what the file holds: named from the tensor names, before anything is built
        ({"num_hidden_layers": 200}, "num_hidden_layers is 200, but the file holds 2 layers (0-1)"),
        # before: NaN vectors with exit 0
        ({"layer_norm_eps": -1e-12}, '"layer_norm_eps" must be a finite number > 0 and <= 1, got -1e-12'),
        ({"layer_norm_eps": 0}, '"layer_norm_eps" must be a finite number > 0 and <= 1, got 0'),
        ({"layer_norm_eps": math.nan}, '"layer_norm_eps" must be a finite number > 0 and <= 1, got nan'),
        ({"hidden_dropout_prob": 1.5}, '"hidden_dropout_prob" must be a finite number >= 0 and <= 1, got 1.5'),
        # before: an AssertionError inside nn.Embedding
        ({"pad_token_id": 99999}, '"pad_token_id" must be an integer >= 0 and <= 30521, got 99999'),
        ({"pad_token_id": -1}, '"pad_token_id" must be an integer >= 0'),
        ({"intermediate_size": 64.5}, '"intermediate_size" must be an integer >= 1'),
        ({"max_position_embeddings": 2}, '"max_position_embeddings" must be an integer >= 3'),
        ({"vocab_size": "abc"}, "\"vocab_size\" must be an integer >= 1 and <= 16777216, got 'abc'"),
        ({"num_attention_heads": True}, '"num_attention_heads" must be an integer >= 1 and <= 4096, got True'),
    ],
)
def test_a_config_number_out_of_range_is_named_before_anything_is_built(tmp_path, tiny_checkpoint, changes, needle):
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    edit_json(folder / "config.json", **changes)
    named = f"{folder / 'config.json'}: {needle}" if needle.startswith('"') else f"{folder / 'model.safetensors'}"
    refused(load_checkpoint, folder, named, needle)


def test_every_number_of_config_json_has_a_range_and_is_checked(tmp_path, tiny_checkpoint):
    """The class, not the instances: each number BertConfig keeps is refused when NaN or a fraction."""
    from minilm.model.loading import CONFIG_RANGES

    numbers = {f for f, kind in BertConfig.__annotations__.items() if kind in ("int", "float")}
    assert set(CONFIG_RANGES) == numbers
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    original = (folder / "config.json").read_text()
    for key, bounds in CONFIG_RANGES.items():
        for bad in [math.nan, math.inf, None, "x", False] + ([2.5] if bounds.get("integer") else [-(10**6)]):
            (folder / "config.json").write_text(json.dumps({**json.loads(original), key: bad}))
            refused(load_checkpoint, folder, f'config.json: "{key}" must be', "fix config.json")
    assert bert_config(json.loads(original)) == BertConfig(**{k: v for k, v in TINY_CONFIG.items() if k in numbers})


def test_a_config_that_does_not_fit_the_header_is_a_bounded_line(tmp_path, tiny_checkpoint):
    """35 tensors are the wrong shape: five are named, then how many more."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    edit_json(folder / "config.json", hidden_size=64)
    message = refused(load_checkpoint, folder, "does not fit the encoder built from config.json", "wrong shape: ")
    assert message.count(" vs model ") == 5 and " and 30 more" in message, message


def test_a_nested_config_json_is_one_line(tmp_path, tiny_checkpoint):
    """Before: 100,000 levels of nesting was a RecursionError."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    (folder / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(load_checkpoint, folder, f"{folder / 'config.json'} is nested too deeply")


@pytest.mark.parametrize(
    "content, needle",
    [
        (b'{"hidden_size": 32\xff}', "is not UTF-8 text (byte 18)"),
        (b'{"hidden_size": ' + b"9" * 5000 + b"}", "is not valid JSON"),  # past Python's 4,300-digit limit
        (b"null", "holds a JSON null, not an object of BERT settings"),
    ],
)
def test_unreadable_json_metadata_is_one_line(tmp_path, tiny_checkpoint, content, needle):
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    (folder / "config.json").write_bytes(content)
    refused(load_checkpoint, folder, f"{folder / 'config.json'} {needle}")


@pytest.mark.parametrize(
    "load, source, name",
    [
        (load_checkpoint, "tiny_checkpoint", "config.json"),
        (load_checkpoint, "tiny_checkpoint", "1_Pooling/config.json"),
        (load_cross_encoder, "tiny_cross_encoder", "tokenizer.json"),
    ],
    ids=["config.json", "pooling", "cross-encoder tokenizer.json"],
)
def test_a_fifo_in_place_of_a_file_is_one_line_not_a_hang(request, tmp_path, load, source, name):
    """A named pipe where a file belongs blocked the reader for ever (nothing ever writes to it). The load
    runs in a forked child so that a regression fails here instead of stalling the suite (the tokenizers
    library blocks holding the GIL, so a thread would not do); 60 s is only a generous bound for a
    refusal that takes milliseconds."""
    folder = copy_of(request.getfixturevalue(source), tmp_path / "model")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def attempt() -> None:
        try:
            load(str(folder), verify=False)
            sender.send("loaded")
        except WeightsError as e:
            sender.send(f"WeightsError: {e}")
        except BaseException as e:
            sender.send(f"{type(e).__name__}: {e}")

    child = context.Process(target=attempt, daemon=True)
    child.start()
    answered = receiver.poll(60)
    child.kill()
    child.join()
    assert answered, f"loading a checkpoint whose {name} is a FIFO hangs"
    message = receiver.recv()
    assert message.startswith(f"WeightsError: {folder / name} is ") and "not a regular file" in message, message


# --------------------------------------------------------------------------- tensors and int8 scales (6, 8)


@pytest.mark.parametrize(
    "name, value", [("encoder.layer.1.output.dense.weight", math.nan), ("embeddings.LayerNorm.bias", -math.inf)]
)
def test_non_finite_weights_are_refused_at_load(tmp_path, tiny_checkpoint, name, value):
    """Before: NaN weights in a --no-verify checkpoint gave NaN vectors with exit 0."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[name][3] = value
    save_file(tensors, str(folder / "model.safetensors"))
    count = tensors[name][3].numel()
    refused(
        load_checkpoint,
        folder,
        f"{folder / 'model.safetensors'}: tensor '{name}' holds {count:,} non-finite value",
        f"({value})",
    )


def test_finite_weights_whose_sum_overflows_still_load(tmp_path, tiny_checkpoint):
    """The quick check sums each tensor: a sum that overflows float32 must not refuse finite weights."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["encoder.layer.0.output.dense.bias"][:2] = 3e38  # finite; their sum is not
    save_file(tensors, str(folder / "model.safetensors"))
    bias = load_checkpoint(str(folder), verify=False).model.encoder.layer[0].output.dense.bias
    assert torch.equal(bias[:2], torch.tensor([3e38, 3e38]))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_checkpoint) -> tuple[Path, dict[str, torch.Tensor]]:
    """A copy of the tiny checkpoint with its own int8_scales.safetensors (all ones), and those scales."""
    from minilm.model.int8 import quantized_input_widths

    folder = copy_of(tiny_checkpoint, tmp_path_factory.mktemp("int8") / "model")
    widths = quantized_input_widths(load_checkpoint(str(folder), verify=False).model)
    scales = {name: torch.ones(width) for name, width in widths.items()}
    save_file(scales, str(folder / FILE_NAME), metadata={"model_sha256": sha256_of(folder / "model.safetensors")})
    return folder, scales


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, 1e-40, 1e30])
def test_an_int8_scale_that_would_give_nan_vectors_is_refused(tmp_path, calibrated, value):
    """Before: one zeroed smoothing vector in the checkpoint's own scales file gave NaN vectors with exit 0
    under --dtype auto. 1e-40 is subnormal (its inverse is infinite); 1e30 overflows the smoothed weights."""
    source, scales = calibrated
    folder = copy_of(source, tmp_path / "model")
    layer = "encoder.layer.1.intermediate.dense"
    save_file(
        {**scales, layer: torch.full_like(scales[layer], value)},
        str(folder / FILE_NAME),
        metadata={"model_sha256": sha256_of(folder / "model.safetensors")},
    )
    needles = (
        (f"{folder / FILE_NAME}: tensor '{layer}' holds 32 non-finite values (nan)",)  # as any tensor file's NaN
        if math.isnan(value)
        else (f"{folder / FILE_NAME}: scales '{layer}'[0] must be a finite number >= 1e-06 and <= 1000000.0",)
    )
    checkpoint = load_checkpoint(str(folder), verify=False)
    with pytest.raises(WeightsError) as caught:
        load_int8_scales(checkpoint)
    assert all(needle in str(caught.value) for needle in needles), str(caught.value)
    refused(lambda path, verify: SentenceEncoder.from_pretrained(path, verify=verify, dtype="auto"), folder, *needles)


def test_sound_int8_scales_load(calibrated):
    folder, scales = calibrated
    loaded = load_int8_scales(load_checkpoint(str(folder), verify=False))
    assert loaded.keys() == scales.keys() and len(loaded) == 8  # 4 int8 layers per block, 2 blocks


# --------------------------------------------------------------------------- sentence-transformers metadata (12)


@pytest.mark.parametrize(
    "prompts, default, needle",
    [
        ({"query": "q: "}, ["query"], "default_prompt_name ['query'] is not among its prompts ['query']"),
        ({"query": "\ud800: "}, None, "the prompt 'query' holds '\\ud800', which is not UTF-8 text"),
        ({"\udfff": "q: "}, None, "the prompt '\\udfff' holds '\\udfff', which is not UTF-8 text"),
    ],
)
def test_odd_prompts_are_one_line(tmp_path, tiny_checkpoint, prompts, default, needle):
    """Before: an unhashable default was a TypeError, a lone surrogate a TypeError from tokenizers."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    path = folder / "config_sentence_transformers.json"
    edit_json(path, prompts=prompts, default_prompt_name=default)
    refused(load_checkpoint, folder, f"{path}: {needle}")


# --------------------------------------------------------------------------- one rule for lengths (13)


def write_cross_encoder(folder: Path, tiny_checkpoint: Path, **config) -> Path:
    """A tiny random cross-encoder (BertForSequenceClassification, one label) with the tiny checkpoint's files."""
    shutil.copytree(tiny_checkpoint, folder, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "model.*"))
    raw = {**TINY_CONFIG, "architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}, **config}
    torch.manual_seed(0)
    model = BertForSequenceClassification(bert_config(raw), 1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(raw))
    return folder


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, tiny_checkpoint) -> Path:
    return write_cross_encoder(tmp_path_factory.mktemp("ce") / "model", tiny_checkpoint)


LENGTH_FILES = [  # (loader, checkpoint fixture, file, key): every length a checkpoint gives
    (load_checkpoint, "tiny_checkpoint", "sentence_bert_config.json", "max_seq_length"),
    (load_cross_encoder, "tiny_cross_encoder", "sentence_bert_config.json", "max_seq_length"),
    (load_cross_encoder, "tiny_cross_encoder", "tokenizer_config.json", "model_max_length"),
]


@pytest.mark.parametrize("load, source, name, key", LENGTH_FILES, ids=lambda v: getattr(v, "__name__", v))
def test_every_length_is_held_to_one_rule(request, tmp_path, load, source, name, key):
    """Before: 0 silently meant 512 while 2 was refused, 3.5 was accepted by the cross-encoder, NaN gave
    "cannot convert float NaN to integer" without a file, and Infinity an OverflowError."""
    folder = copy_of(request.getfixturevalue(source), tmp_path / "model")
    if name == "tokenizer_config.json":  # read when sentence_bert_config.json gives no length
        (folder / "sentence_bert_config.json").unlink()
    for bad, shown in [(0, "0"), (2, "2"), (3.5, "3.5"), (math.nan, "nan"), (math.inf, "inf"), (True, "True")]:
        edit_json(folder / name, **{key: bad})
        refused(load, folder, f'{folder / name}: "{key}" must be an integer >= 3, got {shown}')
    for good, length in [(10**30, 512), (100, 100), (3, 3)]:  # 10**30: transformers' "no limit", capped at 512
        edit_json(folder / name, **{key: good})
        assert loaded_length(load(str(folder), verify=False)) == length


def loaded_length(checkpoint) -> int:
    """Tokens per text of a loaded sentence encoder, or per pair of a loaded cross-encoder."""
    return checkpoint.config.max_length if hasattr(checkpoint, "config") else checkpoint.sentence_config.max_seq_length


def test_do_lower_case_must_be_true_or_false(tmp_path, tiny_checkpoint):
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    edit_json(folder / "sentence_bert_config.json", do_lower_case="false")  # bool("false") lowercased every text
    refused(load_checkpoint, folder, "sentence_bert_config.json: do_lower_case is 'false'; it must be true or false")


# --------------------------------------------------------------------------- the cross-encoder's files (12)


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("modules.json", [{"type": 5}], "modules.json is not a list of modules with a type each"),
        ("modules.json", None, "modules.json is not a list of modules with a type each"),
        ("config.json", {"architectures": 5}, "config.json: architectures 5 is not a cross-encoder"),
        ("config.json", {"num_labels": 1.5, "id2label": None}, '"num_labels" must be an integer >= 1'),
    ],
)
def test_odd_cross_encoder_files_are_one_line(tmp_path, tiny_cross_encoder, name, content, needle):
    """Before: modules.json [{"type": 5}] or null, and architectures 5, were tracebacks."""
    folder = copy_of(tiny_cross_encoder, tmp_path / "model")
    if name == "config.json":
        edit_json(folder / name, **content)
    else:
        (folder / name).write_text(json.dumps(content))
    refused(load_cross_encoder, folder, needle)


def test_a_cross_encoder_with_one_token_type_is_refused(tmp_path, tiny_checkpoint):
    """Its weights fit its config.json, but a pair's second text is token type 1: an IndexError when scoring."""
    folder = write_cross_encoder(tmp_path / "model", tiny_checkpoint, type_vocab_size=1)
    refused(load_cross_encoder, folder, '"type_vocab_size" must be an integer >= 2')


# --------------------------------------------------------------------------- paths in modules.json (14)


def pooling_at(folder: Path, path: object) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith("Pooling"):
            module["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize(
    "path, needle",
    [
        ("config.json", "'config.json' is a file, not a folder of"),
        ("2_Missing", "'2_Missing' does not exist, not a folder of"),
        ("/etc", "'/etc' is absolute"),
        ("../outside", "'../outside' leads outside the checkpoint folder"),
        ("1_Pooling/../../outside", "leads outside the checkpoint folder"),
        ("linked", "'linked' leads outside the checkpoint folder"),
        (5, "the Pooling module's path is 5, not a folder name"),
        ("", "'' is the checkpoint folder itself, not a module's own folder"),  # read config.json as pooling's
        (".", "'.' is the checkpoint folder itself"),
    ],
)
def test_a_pooling_path_stays_inside_the_checkpoint_folder(tmp_path, tiny_checkpoint, path, needle):
    """Before: a Pooling path that is a file said "cannot write the output: Not a directory", and /etc
    (or ../outside, or a symlink out) was followed outside the checkpoint folder and read."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    outside = copy_of(folder / "1_Pooling", tmp_path / "outside")  # a readable pooling config out there
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    pooling_at(folder, path)
    refused(load_checkpoint, folder, f"{folder / 'modules.json'}: the Pooling module's path", needle)


def test_a_pooling_path_that_stays_inside_loads(tmp_path, tiny_checkpoint):
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    pooling_at(folder, "1_Pooling/../1_Pooling")
    assert load_checkpoint(str(folder), verify=False).sentence_config.pooling == "mean"


# --------------------------------------------------------------------------- the command: exit 2, one line


def test_the_command_refuses_nan_producing_checkpoints_in_one_line(tmp_path, tiny_checkpoint, calibrated):
    """Through minilm.embed's main: a negative eps and a zero int8 scale each printed NaN vectors with exit 0."""
    eps = copy_of(tiny_checkpoint, tmp_path / "eps")
    edit_json(eps / "config.json", layer_norm_eps=-1e-12)
    proc = drive(args=["--model", str(eps), "--no-verify", "--format", "jsonl", "A sentence."])
    assert proc.stdout == ""
    error_line(proc, f'{eps / "config.json"}: "layer_norm_eps" must be a finite number > 0')

    source, scales = calibrated
    int8 = copy_of(source, tmp_path / "int8")
    layer = "encoder.layer.0.attention.self"
    save_file(
        {**scales, layer: torch.zeros_like(scales[layer])},
        str(int8 / FILE_NAME),
        metadata={"model_sha256": sha256_of(int8 / "model.safetensors")},
    )
    proc = drive(args=["--model", str(int8), "--no-verify", "--dtype", "auto", "--format", "jsonl", "A sentence."])
    assert proc.stdout == ""
    error_line(proc, f"{int8 / FILE_NAME}: scales '{layer}'[0] must be a finite number >= 1e-06")


@pytest.mark.slow
def test_a_billion_layers_is_one_line_from_the_command_not_a_hang(tmp_path, tiny_checkpoint):
    """As a user meets it: a real `python -m minilm.embed`. It used to grow by 37 MB/s without end;
    the 120 s limit is only a generous bound for a run that takes a few seconds."""
    folder = copy_of(tiny_checkpoint, tmp_path / "model")
    edit_json(folder / "config.json", num_hidden_layers=10**9)
    proc = subprocess.run(
        [sys.executable, "-m", "minilm.embed", "--model", str(folder), "--no-verify", "A sentence."],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == "", (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.splitlines() == [
        f'error: {folder / "config.json"}: "num_hidden_layers" must be an integer >= 1 and <= 256, '
        "got 1000000000; fix config.json, or re-download the checkpoint"
    ]
