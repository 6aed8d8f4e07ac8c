"""A checkpoint's sentence-transformers settings: config.json as a BertConfig, modules.json, the pooling
config, sentence_bert_config.json, prompts, and the tokenizer they describe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base.numbers import NumberError
from ..model.encoder import BertConfig
from ..model.loading import bert_config, short_repr
from ..model.pooling import POOLING_MODES, PoolingMode
from ..text.tokenization import SentenceTokenizer, TokenizerKind
from .errors import WeightsError
from .files import checked_length, checkpoint_subfolder, open_tokenizer, read_json


@dataclass(frozen=True)
class SentenceConfig:
    """What sentence-transformers does around the backbone, read from the checkpoint's JSON files."""

    max_seq_length: int
    do_lower_case: bool
    pooling: PoolingMode
    normalize: bool
    include_prompt: bool = True  # 1_Pooling: False pools without the prompt's tokens
    prompts: tuple[tuple[str, str], ...] = ()  # config_sentence_transformers.json: (name, text) pairs
    default_prompt_name: str | None = None  # the prompt every text gets unless another is asked for


def read_bert_config(folder: Path) -> BertConfig:
    path = folder / "config.json"
    raw = read_json(path, dict, "an object of BERT settings")
    try:
        return bert_config(raw, source=str(path))
    except NumberError as e:
        raise WeightsError(f"{e}; fix config.json, or re-download the checkpoint") from None
    except (TypeError, ValueError) as e:
        raise WeightsError(str(e)) from None


def read_modules(folder: Path) -> list[tuple[str, dict]] | None:
    """modules.json as (the type's last part, "Pooling" say, and the entry) per module, in order; None without it."""
    path = folder / "modules.json"
    if not path.exists():
        return None
    modules = read_json(path, None)
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type", ""), str) for m in modules
    ):
        raise WeightsError(f"{path} is not a list of modules with a type each; re-download or reinstall it")
    return [(m.get("type", "").rsplit(".", 1)[-1], m) for m in modules]


# 1_Pooling/config.json's older boolean flags, in the order sentence-transformers reads them
POOLING_FLAGS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _read_pooling(path: Path) -> tuple[PoolingMode, bool]:
    """The pooling mode and include_prompt of a sentence-transformers Pooling config, as
    sentence-transformers reads it: a "pooling_mode" string (or a list of one) wins over the older
    boolean flags, and a config with neither pools by mean. Several modes at once (their vectors
    concatenated) are refused."""
    config = read_json(path, dict, "an object of pooling flags")
    if "pooling_mode" in config:
        modes = config["pooling_mode"] if isinstance(config["pooling_mode"], list) else [config["pooling_mode"]]
    else:
        odd = [flag for flag in POOLING_FLAGS if not isinstance(config.get(flag, False), bool)]
        if odd:
            raise WeightsError(f"{path}: {odd[0]} is {short_repr(config[odd[0]])}; it must be true or false")
        modes = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise WeightsError(
            f"{path}: pooling {short_repr(modes, 200)} is not supported; one of {', '.join(POOLING_MODES)} is "
            "(several modes concatenated are not)"
        )
    include_prompt = config.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise WeightsError(f"{path}: include_prompt is {short_repr(include_prompt)}; it must be true or false")
    return modes[0], include_prompt


SIMILARITIES = ("cosine", None)  # config_sentence_transformers.json's similarity_fn_name values we follow


def _utf8_problem(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate such as "\\ud800" that JSON can spell), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds {short_repr(text[e.start : e.end])}, which is not UTF-8 text"
    return None


def _read_st_config(path: Path) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The prompts and default prompt name of config_sentence_transformers.json. A prompt that is not
    UTF-8 text, a default name that is not among the prompts, and a similarity other than cosine are refused."""
    config = read_json(path, dict, default={})
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, (str, type(None))) for v in prompts.values()):
        raise WeightsError(f"{path}: prompts must map names to texts, found {short_repr(prompts)}")
    prompts = {name: text or "" for name, text in prompts.items()}  # null is "", as in sentence-transformers
    for name, text in prompts.items():
        if problem := _utf8_problem(name) or _utf8_problem(text):
            raise WeightsError(f"{path}: the prompt {short_repr(name)} {problem}; fix the file")
    default = config.get("default_prompt_name")
    if default is not None and (not isinstance(default, str) or default not in prompts):
        raise WeightsError(
            f"{path}: default_prompt_name {short_repr(default)} is not among its prompts "
            f"{short_repr(sorted(prompts), 200)}; fix the file"
        )
    if config.get("truncate_dim") is not None:
        raise WeightsError(
            f"{path}: truncate_dim {short_repr(config['truncate_dim'])} is not supported; "
            "remove it to embed at the full dimension"
        )
    if config.get("similarity_fn_name") not in SIMILARITIES:
        raise WeightsError(
            f"{path}: similarity_fn_name {short_repr(config['similarity_fn_name'])} is not supported; only cosine is"
        )
    return tuple(prompts.items()), default


def read_sentence_config(folder: Path, bert: BertConfig) -> SentenceConfig:
    """max_seq_length from sentence_bert_config.json; pooling and Normalize from modules.json.

    A plain BERT folder without these files gets mean pooling, no normalization and the model's
    position limit, as sentence-transformers does when it wraps a bare transformers model.
    """
    sbert_path = folder / "sentence_bert_config.json"
    sbert = read_json(sbert_path, dict, default={})
    modules = read_modules(folder) or []
    max_len = sbert.get("max_seq_length")  # absent or null: the model's positions, as sentence-transformers
    max_len = bert.max_position_embeddings if max_len is None else checked_length(max_len, sbert_path, "max_seq_length")
    do_lower_case = sbert.get("do_lower_case", False)
    if not isinstance(do_lower_case, bool):
        raise WeightsError(f"{sbert_path}: do_lower_case is {short_repr(do_lower_case)}; it must be true or false")
    types = dict(modules)
    pooling: PoolingMode = "mean"
    include_prompt = True
    if "Pooling" in types:
        where = f"{folder / 'modules.json'}: the Pooling module's path"
        pooling_folder = checkpoint_subfolder(folder, types["Pooling"].get("path", ""), where)
        pooling, include_prompt = _read_pooling(pooling_folder / "config.json")
    unsupported = sorted(set(types) - {"Transformer", "Pooling", "Normalize"})
    if unsupported:
        raise WeightsError(
            f"{folder / 'modules.json'}: modules {short_repr(unsupported, 200)} are not supported "
            "(only Transformer, Pooling, Normalize)"
        )
    prompts, default_prompt_name = _read_st_config(folder / "config_sentence_transformers.json")
    return SentenceConfig(
        max_seq_length=min(max_len, bert.max_position_embeddings),
        do_lower_case=do_lower_case,
        pooling=pooling,
        normalize="Normalize" in types,
        include_prompt=include_prompt,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )


def read_tokenizer(
    folder: Path, config: SentenceConfig, vocab_size: int, kind: TokenizerKind = "fast"
) -> SentenceTokenizer:
    """The checkpoint's tokenizer.json (and, for the "python" tokenizer, vocab.txt) with the checkpoint's truncation,
    checked against the model's vocab_size."""
    return open_tokenizer(
        folder,
        lambda path: SentenceTokenizer.from_file(path, config.max_seq_length, config.do_lower_case, kind=kind),
        vocab_size,
        needs=("vocab.txt",) if kind == "python" else (),
    )
