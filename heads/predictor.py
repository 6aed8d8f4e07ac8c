"""`MultiTaskPredictor`: raw texts in, question type, sentiment and entities (character offsets) out,
from one encoder pass. `python -m heads.predict` (predict.py) and `python -m minilm.serve`'s /predict
are its two front ends; predict.py's docstring has the record format and how long texts are read.
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import torch

from minilm import SentenceEncoder
from minilm.encoders.batching import batches_with_progress, show_bar
from minilm.text.tokenization import SentenceTokenizer, length_sorted_batches, right_pad
from minilm.text.windows import text_offsets, token_windows
from minilm.weights import WeightsError, from_override, shipped_origin, shipped_path

from .features import word_features
from .metrics import accuracy, span_scores
from .model import MultiTaskModel, Words
from .ner import bio_to_spans, joined_text, window_owners
from .storage import load_model

TOKEN_TASK_KEY = {"ner": "entities"}  # output key of a token task's spans


def shipped_heads() -> Path:
    """The heads minilm ships (made in weights/heads/, package data minilm/shipped/heads), or
    `$MINILM_WEIGHTS_DIR/heads` when that folder exists."""
    return shipped_path("heads", is_dir=True)


class MultiTaskPredictor:
    """A saved MultiTaskModel with its tokenizer: raw texts in, one record per text out."""

    def __init__(self, model: MultiTaskModel, tokenizer: SentenceTokenizer, device: torch.device | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device or torch.device("cpu")
        self.window = tokenizer.max_seq_length - tokenizer.num_special  # content tokens per window (254)
        self.stride = self.window // 2  # windows overlap by half, so every token gets a well-centred window

    @classmethod
    def from_folder(cls, folder: str | Path | None = None, device: str | None = None) -> MultiTaskPredictor:
        """Load heads saved by heads.train (default: the shipped heads, `shipped_heads()`) on the stock backbone."""
        folder = Path(folder) if folder else shipped_heads()
        if folder.exists() and not folder.is_dir():
            raise WeightsError(f"--model {folder} is a file; give the folder that python -m heads.train wrote")
        if not folder.is_dir():
            raise WeightsError(
                f"model folder {folder} does not exist; train one with python -m heads.train --output {folder}"
            )
        stock = SentenceEncoder.from_pretrained(device=device)
        try:
            model, _ = load_model(folder, stock.model, stock.checkpoint.sha256, normalize=stock.config.normalize)
        except WeightsError as e:
            if not from_override(folder):
                raise
            raise WeightsError(f"{e} ({folder}: {shipped_origin(folder)})") from None
        return cls(model.to(stock.device), stock.tokenizer, stock.device)

    @torch.no_grad()
    def predict(
        self,
        texts: list[str],
        batch_size: int = 32,
        with_embedding: bool = False,
        show_progress_bar: bool | None = None,
    ) -> list[dict]:
        """One record per text (see the module docstring); with_embedding adds each text's sentence embedding,
        from the same encoder pass: the vector `SentenceEncoder.encode` gives for it.
        show_progress_bar: None shows one on stderr from PROGRESS_BAR_MIN_TEXTS texts, as SentenceEncoder.encode."""
        pieces = self.tokenizer.split(texts)
        lowercased = self.tokenizer.lowercase
        offsets = [text_offsets(text, piece, lowercased=lowercased) for text, piece in zip(texts, pieces)]  # in `text`
        words = [word_features(t, p, offsets=o) for t, p, o in zip(texts, pieces, offsets)]
        # one row per window: [CLS] + content tokens [start, end) + [SEP], and the words that start inside it
        rows = []  # (text index, window index, ids, word numbers, word positions in the row)
        windows = [token_windows(len(p.ids), self.window, self.stride) for p in pieces]
        for t, (piece, spans) in enumerate(zip(pieces, windows)):
            ids, starts = piece.ids, words[t][0]  # .ids once per text: each call builds a new list of every token
            for w, (start, end) in enumerate(spans):
                inside = range(bisect_left(starts, start), bisect_left(starts, end))  # starts are sorted
                positions = [starts[k] - start + 1 for k in inside]  # +1: [CLS]
                rows.append((t, w, [self.tokenizer.cls_id, *ids[start:end], self.tokenizer.sep_id], inside, positions))
        sentences: dict[int, dict[str, tuple[int, float]]] = {}  # text -> task -> (label id, its probability)
        emissions: dict[tuple[int, int], dict[str, torch.Tensor]] = {}  # (text, window) -> task -> (W_w, K)
        embeddings: dict[int, list[float]] = {}
        sentence_tasks = [name for name, task in self.model.tasks.items() if task.kind == "sentence"]
        token_tasks = [name for name, task in self.model.tasks.items() if task.kind == "token"]
        show = show_bar(len(texts), show_progress_bar)  # counted in texts, drawn in windows
        lengths = [len(row[2]) for row in rows]
        for batch in batches_with_progress(lengths, batch_size, show=show, desc="Predicting", unit="window"):
            chunk = [rows[r] for r in batch]
            ids, mask = right_pad([row[2] for row in chunk])
            positions, word_mask = right_pad([row[4] for row in chunk])
            shapes, _ = right_pad([words[t][1][inside.start : inside.stop] for t, _, _, inside, _ in chunk])
            batch_words = Words(positions.to(self.device), word_mask.bool().to(self.device), shapes.to(self.device))
            out = self.model(ids.to(self.device), mask.to(self.device), batch_words)  # one encoder pass, every head
            # whole-batch tensors to Python / CPU once, then one row per window (per-row tensor calls cost more)
            best = {name: out.logits[name].softmax(-1).max(-1) for name in sentence_tasks}
            best = {name: (b.indices.tolist(), b.values.tolist()) for name, b in best.items()}
            logits = {name: out.logits[name].float().cpu() for name in token_tasks}
            vectors = out.embedding.tolist() if with_embedding else None
            for row, (t, w, _, inside, _) in enumerate(chunk):
                if w == 0:  # sentence heads and the embedding read the first window: the text minilm.embed embeds
                    sentences[t] = {name: (best[name][0][row], best[name][1][row]) for name in sentence_tasks}
                    if vectors is not None:
                        embeddings[t] = vectors[row]
                emissions[t, w] = {name: logits[name][row, : len(inside)] for name in token_tasks}
        tags = {name: self._decode(name, windows, words, emissions) for name in token_tasks}
        records = []
        for t, text in enumerate(texts):
            record: dict = {"text": text}
            for name, task in self.model.tasks.items():
                if task.kind == "sentence":
                    label, score = sentences[t][name]
                    record[name] = {"label": task.labels[label], "score": round(score, 6)}
                else:
                    path, scores = tags[name][t]
                    labels = [task.labels[i] for i in path]
                    record[TOKEN_TASK_KEY.get(name, name)] = self._entities(
                        pieces[t].word_ids, offsets[t], text, words[t][0], labels, scores
                    )
            if t in embeddings:
                record["embedding"] = embeddings[t]
            records.append(record)
        return records

    def _decode(self, name: str, windows, words, emissions, batch_size: int = 256) -> list[tuple[list, list]]:
        """Each text's (tag ids, their probabilities) for token task `name`: every word takes its emissions
        from the window that owns its first sub-token, then the head decodes whole texts, in batches."""
        per_text = []  # (W_t, K) per text
        for t, spans in enumerate(windows):
            if len(spans) == 1:  # the whole text in one window (almost every text): its rows are the words, in order
                per_text.append(emissions[t, 0][name])
                continue
            starts = words[t][0]
            owners = window_owners(spans)  # the window each token takes its prediction from
            first_word = [bisect_left(starts, start) for start, _ in spans]  # each window's first word
            rows = [emissions[t, owners[p]][name][k - first_word[owners[p]]] for k, p in enumerate(starts)]
            per_text.append(torch.stack(rows))  # a text of several windows has words
        decoded: list[tuple[list, list]] = [([], [])] * len(windows)
        texts = [t for t, e in enumerate(per_text) if len(e)]
        head = self.model.heads[name]
        for batch in length_sorted_batches([len(per_text[t]) for t in texts], batch_size):
            chosen = [texts[i] for i in batch]
            padded, mask = right_pad([per_text[t] for t in chosen])
            paths, scores = head.decode(padded, mask.bool())
            for t, path, score in zip(chosen, paths, scores):
                decoded[t] = (path, score)
        return decoded

    @staticmethod
    def _entities(
        word_ids: list[int | None],
        offsets: list[tuple[int, int]],
        text: str,
        starts: list[int],
        tags: list[str],
        scores: list[float],
    ) -> list[dict]:
        """Word tags -> BIO spans -> character offsets in `text` and the mean probability of the entity's tags.

        word_ids, offsets: each token's, read once per text (tokenizers.Encoding builds a new list of every
        token on each .word_ids or .offsets; reading them per entity made a long text quadratic).
        """
        if not tags:
            return []
        last_token = {word: position for position, word in enumerate(word_ids) if word is not None}
        ends = [offsets[last_token[word_ids[p]]][1] for p in starts]  # a word ends where its last token does
        entities = []
        for label, start_word, end_word in bio_to_spans(tags):
            start, end = offsets[starts[start_word]][0], ends[end_word - 1]
            score = sum(scores[start_word:end_word]) / (end_word - start_word)
            entities.append(
                {"text": text[start:end], "label": label, "start": start, "end": end, "score": round(score, 6)}
            )
        return entities


def raw_text_scores(
    predictor: MultiTaskPredictor, task: str, examples: list, batch_size: int = 32
) -> tuple[float, list[dict]]:
    """Score heads.predict as a user meets it: the examples as raw text through `predictor.predict`.

    question_type / sentiment: accuracy (0..100) of the predicted labels. ner: entity F1 (0..100) of the
    predicted character spans on each CoNLL sentence joined by single spaces, against the gold entities'
    spans in that text. Returns the score and the records.
    """
    if task == "ner":
        texts = [joined_text(ex.words)[0] for ex in examples]
        records = predictor.predict(texts, batch_size)
        gold = []
        for example in examples:
            starts = joined_text(example.words)[1]
            ends = [start + len(word) for start, word in zip(starts, example.words)]
            gold.append([(kind, starts[a], ends[b - 1]) for kind, a, b in bio_to_spans(example.tags)])
        predicted = [[(e["label"], e["start"], e["end"]) for e in r["entities"]] for r in records]
        return 100 * span_scores(predicted, gold)["f1"], records
    records = predictor.predict([ex.text for ex in examples], batch_size)
    return 100 * accuracy([r[task]["label"] for r in records], [ex.label for ex in examples]), records
