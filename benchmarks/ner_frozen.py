"""Frozen-backbone NER ablation on CoNLL-2003 (issue 15): how far word-level heads get without fine-tuning.

Run (from the project root; needs ../shared/data/conll2003 and the all-MiniLM-L6-v2 weights):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ner_frozen.py                   # all rows a..e
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ner_frozen.py --rows a,e --epochs 3

What it does:
  1. One frozen fp32 pass of the encoder over the train/dev/test word lists (`encode_words`), keeping
     all 7 hidden states (embeddings + 6 blocks, `BertModel.hidden_states`) at the FIRST sub-token of each
     word only, as float16, plus the 12 casing/shape features of that sub-token (`word_list_features`).
     Cached to --cache (default /tmp/minilm_ner_frozen_features.pt), so reruns skip the pass.
     Sentences longer than max_seq_length - 2 word pieces are truncated by the tokenizer; the script
     counts them, and the words cut off get all-zero hidden states (in CoNLL-2003 there are none: the
     longest sentence has 162 pieces).
  2. Word-level heads trained on the cache (Adam, batches of --batch-size sentences, --epochs epochs,
     torch.manual_seed(0) before each row), the epoch with the best dev F1 kept, then scored on test:
       a  linear on the last layer, argmax decoding (a stray I-X is read as conlleval does, bio_to_spans)
       b  + ScalarMix over the 7 states
       c  + the 12 shape features concatenated
       d  + a 1-layer BiLSTM over the words (--lstm-hidden per direction, --dropout)
       e  + a CRF on top (IOB2-constrained Viterbi, heads.crf.bio_transitions)
     F1 is strict CoNLL entity F1 (heads.metrics.entity_scores) over the words of each sentence.

Prints the CPU model, the frozen-pass time, one table row per configuration (dev F1, test F1, best epoch /
epochs run, wall time) and the peak resident memory of the process.

Measured 2026-12-01 on 2 busy AMD EPYC cores (another CI job sharing them), default settings, rows a-c and d-e
as two parallel processes with --threads 1 (wall times are therefore rough):

    frozen pass: train 267 s, dev 96 s, test 61 s (425 s in all); cache 1.6 GB; peak RSS about 3.5 GiB
    | row | configuration          | dev F1 | test F1 | best epoch / epochs | wall (s) |
    | a   | linear, last layer     |  64.62 |   59.51 | 12 / 15             |       62 |
    | b   | + ScalarMix (7 states) |  73.40 |   68.29 |  9 / 15             |      151 |
    | c   | + 12 shape features    |  75.65 |   70.96 | 15 / 15             |      164 |
    | d   | + BiLSTM (256, 0.4)    |  90.02 |   85.23 |  5 / 6              |      476 |
    | e   | + CRF                  |  92.14 |   88.10 |  4 / 6              |      351 |
    --rows e --epochs 10 (same seed, so epochs 1-6 repeat the row above): dev 92.35, test 88.28, best epoch 10
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from pathlib import Path

import torch
from torch import nn

from heads.crf import CRF, bio_transitions
from heads.data import CONLL_TAGS, read_conll
from heads.features import NUM_FEATURES, word_list_features
from heads.metrics import entity_scores
from heads.model import ScalarMix
from minilm.sentence_encoder import SentenceEncoder
from minilm.text.tokenization import length_sorted_batches, right_pad

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "conll2003"
SPLITS = ("train", "dev", "test")
TAG_IDS = {tag: i for i, tag in enumerate(CONLL_TAGS)}
ROWS = {
    "a": "linear, last layer",
    "b": "+ ScalarMix (7 states)",
    "c": "+ 12 shape features",
    "d": "+ BiLSTM",
    "e": "+ CRF",
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


@torch.no_grad()
def frozen_features(encoder: SentenceEncoder, word_lists: list[list[str]], batch_size: int = 64) -> dict:
    """Per word: states (N, 7, C) float16 at its first sub-token, shapes (N, 12) float32; plus sentence lengths."""
    encodings, n_tokens = encoder.tokenizer.encode_words(word_lists)
    keep = encoder.tokenizer.max_seq_length
    truncated = sum(n > keep for n in n_tokens)
    model = encoder.model.eval()
    device = next(model.parameters()).device
    per_sentence: list[torch.Tensor | None] = [None] * len(word_lists)
    shapes = []
    for words, enc in zip(word_lists, encodings):
        features = word_list_features(words, enc)  # (T, 12) per token
        first = first_pieces(enc.word_ids, len(words))
        rows = torch.zeros(len(words), NUM_FEATURES)
        seen = [w for w in range(len(words)) if first[w] is not None]
        rows[seen] = features[[first[w] for w in seen]]
        shapes.append(rows)
    for batch in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
        tokens = encoder.tokenizer.pad([encodings[i] for i in batch]).to(device)
        states = torch.stack(model.hidden_states(tokens.input_ids, tokens.attention_mask), dim=2)  # (B, T, 7, C)
        for row, i in enumerate(batch):
            first = first_pieces(encodings[i].word_ids, len(word_lists[i]))
            out = torch.zeros(len(first), states.shape[2], states.shape[3], dtype=torch.float16)
            seen = [w for w, p in enumerate(first) if p is not None]  # words cut off by truncation stay zero
            out[seen] = states[row, [first[w] for w in seen]].half().cpu()
            per_sentence[i] = out
    return {
        "states": torch.cat(per_sentence),  # type: ignore[arg-type]
        "shapes": torch.cat(shapes),
        "lengths": torch.tensor([len(w) for w in word_lists]),
        "truncated": truncated,
    }


def first_pieces(word_ids: list[int | None], num_words: int) -> list[int | None]:
    """The position of each word's first sub-token (None: the word has none, e.g. cut off by truncation)."""
    first: list[int | None] = [None] * num_words
    for position, word in enumerate(word_ids):
        if word is not None and first[word] is None:
            first[word] = position
    return first


def load_or_build(cache: Path, batch_size: int) -> dict:
    data = {split: read_conll(DATA / f"{split}.txt") for split in SPLITS}
    if cache.exists():
        print(f"frozen features: read from {cache}")
        features = torch.load(cache)
    else:
        encoder = SentenceEncoder.from_pretrained()
        torch.set_grad_enabled(False)
        features = {}
        start = time.perf_counter()
        for split in SPLITS:
            t0 = time.perf_counter()
            features[split] = frozen_features(encoder, [list(x.words) for x in data[split]], batch_size)
            print(
                f"frozen pass {split}: {len(data[split])} sentences, {len(features[split]['shapes'])} words, "
                f"{time.perf_counter() - t0:.1f} s"
            )
        torch.set_grad_enabled(True)
        print(f"frozen pass total: {time.perf_counter() - start:.1f} s; cached to {cache}")
        torch.save(features, cache)
        del encoder
    for split in SPLITS:
        features[split]["tags"] = [list(x.tags) for x in data[split]]
        features[split]["labels"] = torch.tensor([TAG_IDS[t] for x in data[split] for t in x.tags])
        features[split]["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), features[split]["lengths"].cumsum(0)])
        print(
            f"{split}: {len(data[split])} sentences, {features[split]['truncated']} longer than the encoder's "
            "max_seq_length (their cut-off words get zero states)"
        )
    return features


class WordTagger(nn.Module):
    """Word-level head over cached states (B, W, 7, C): the layers each row of the ablation adds."""

    def __init__(self, row: str, num_states: int, width: int, lstm_hidden: int, dropout: float):
        super().__init__()
        self.row = row
        self.mix = ScalarMix(num_states) if row >= "b" else None
        in_dim = width + (NUM_FEATURES if row >= "c" else 0)
        self.lstm = None
        if row >= "d":
            self.dropout = nn.Dropout(dropout)
            self.lstm = nn.LSTM(in_dim, lstm_hidden, num_layers=1, batch_first=True, bidirectional=True)
            in_dim = 2 * lstm_hidden
        self.out = nn.Linear(in_dim, len(CONLL_TAGS))
        self.crf = CRF(len(CONLL_TAGS), *bio_transitions(CONLL_TAGS)) if row >= "e" else None

    def emissions(self, states: torch.Tensor, shapes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.mix(list(states.unbind(2))) if self.mix is not None else states[:, :, -1]  # (B, W, C)
        if self.row >= "c":
            x = torch.cat([x, shapes], dim=-1)
        if self.lstm is not None:
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(self.dropout(x), lengths, batch_first=True, enforce_sorted=False)
            x, _ = self.lstm(packed)
            x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True, total_length=mask.shape[1])
            x = self.dropout(x)
        return self.out(x)  # (B, W, K)

    def loss(self, emissions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.crf is not None:
            return self.crf.neg_log_likelihood(emissions, labels, mask)
        return nn.functional.cross_entropy(emissions[mask], labels[mask])

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        if self.crf is not None:
            return self.crf.decode(emissions, mask)
        best = emissions.argmax(-1).tolist()
        return [path[:n] for path, n in zip(best, mask.sum(1).tolist())]


def batch(split: dict, sentences: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(states (B, W, 7, C) float32, shapes (B, W, 12), labels (B, W), mask (B, W) bool) for these sentences."""
    spans = [(split["offsets"][i].item(), split["offsets"][i + 1].item()) for i in sentences]
    states, mask = right_pad([split["states"][a:b].float() for a, b in spans])
    shapes, _ = right_pad([split["shapes"][a:b] for a, b in spans])
    labels, _ = right_pad([split["labels"][a:b] for a, b in spans])
    return states, shapes, labels, mask.bool()


def training_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of sentences of similar length (little padding for the LSTM), new each epoch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    pool = 50 * batch_size
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def evaluate(model: WordTagger, split: dict, batch_size: int = 256) -> float:
    model.eval()
    lengths = split["lengths"].tolist()
    predicted: list[list[str]] = [[] for _ in lengths]
    for sentences in length_sorted_batches(lengths, batch_size):
        states, shapes, _, mask = batch(split, sentences)
        paths = model.decode(model.emissions(states, shapes, mask), mask)
        for i, path in zip(sentences, paths):
            predicted[i] = [CONLL_TAGS[t] for t in path]
    model.train()
    return 100 * entity_scores(predicted, split["tags"])["f1"]


def run_row(row: str, features: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    rng = random.Random(0)
    train = features["train"]
    _, num_states, width = train["states"].shape
    model = WordTagger(row, num_states, width, args.lstm_hidden, args.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    lengths = train["lengths"].tolist()
    best = {"dev": -1.0, "epoch": 0, "state": None}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        total = 0.0
        batches = training_batches(lengths, args.batch_size, rng)
        for sentences in batches:
            states, shapes, labels, mask = batch(train, sentences)
            loss = model.loss(model.emissions(states, shapes, mask), labels, mask)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            total += loss.item()
        dev = evaluate(model, features["dev"])
        print(
            f"  [{row}] epoch {epoch}: loss {total / len(batches):.4f}, dev F1 {dev:.2f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        if dev > best["dev"]:
            best = {"dev": dev, "epoch": epoch, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    test = evaluate(model, features["test"])
    wall = time.perf_counter() - start
    if model.mix is not None:
        weights = " ".join(f"{w:.2f}" for w in model.mix.weights.softmax(0).tolist())
        print(f"  [{row}] ScalarMix weights (embeddings, layer 1..6): {weights}; gamma {model.mix.gamma.item():.2f}")
    return {"dev": best["dev"], "test": test, "epoch": best["epoch"], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="a,b,c,d,e", help="comma-separated configurations among a,b,c,d,e")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per row (default: 15 for a-c, 6 for d-e)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/minilm_ner_frozen_features.pt"))
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per training batch")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--lstm-hidden", type=int, default=256, help="BiLSTM units per direction (rows d, e)")
    parser.add_argument("--dropout", type=float, default=0.4, help="dropout around the BiLSTM (rows d, e)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if unknown := [r for r in rows if r not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose among {','.join(ROWS)}")
    if not DATA.is_dir():
        raise SystemExit(f"skipped: {DATA} not found (CoNLL-2003 lives in ../shared/data, see its README)")
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    features = load_or_build(args.cache, batch_size=64)
    results = {}
    epochs_arg = args.epochs
    for row in rows:
        args.epochs = epochs_arg if epochs_arg is not None else (15 if row <= "c" else 6)
        print(f"row {row}: {ROWS[row]}, {args.epochs} epochs", flush=True)
        results[row] = {**run_row(row, features, args), "epochs": args.epochs}
    print("\n| row | configuration | dev F1 | test F1 | best epoch / epochs | wall (s) |")
    print("|---|---|---|---|---|---|")
    for row, r in results.items():
        print(
            f"| {row} | {ROWS[row]} | {r['dev']:.2f} | {r['test']:.2f} | {r['epoch']} / {r['epochs']} | "
            f"{r['wall']:.0f} |"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\npeak resident memory: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
