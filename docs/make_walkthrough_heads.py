"""Build docs/walkthrough-heads.md from docs/walkthrough-heads.in.md, with numbers from the shipped heads.

    .venv/bin/python docs/make_walkthrough_heads.py           # rewrite docs/walkthrough-heads.md
    .venv/bin/python docs/make_walkthrough_heads.py --check   # exit 1 if it is out of date

The page follows one sentence through `heads.predict` by hand: word pieces to words, the layer mix,
casing, the BiLSTM, the CRF (each Viterbi step), the sentence heads, the embedding of the same pass,
and where the time goes. `trace()` keeps every intermediate result, so tests/test_walkthrough_heads.py
can check the hand-made steps against the library (Viterbi against CRF.decode, the entities against
MultiTaskPredictor.predict, the embedding against SentenceEncoder.encode). Placeholders and the
--check command line are docs/make_walkthrough.py's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_walkthrough, also when a test loads this file

from make_walkthrough import ROOT, fill, machine_dependent, write_or_check

from heads.features import FEATURE_NAMES, SHAPES, word_features, word_spans
from heads.model import MultiTaskModel, read_layers
from heads.ner import bio_to_spans
from heads.predictor import MultiTaskPredictor
from minilm import SentenceEncoder
from minilm.model.pooling import max_pool, mean_pool
from minilm.text.windows import text_offsets

TEMPLATE = ROOT / "docs" / "walkthrough-heads.in.md"
OUTPUT = ROOT / "docs" / "walkthrough-heads.md"
TEXT = "Angela Merkel met Emmanuel Macron in Berlin on Tuesday."
CONTEXT_WORD = "Macron"  # the word shown with and without its context
ROUNDS, CALLS = 3, 10  # the cost table: the fastest of 3 rounds of 10 heads.predict calls (after 3 to warm up)


@dataclass
class HeadsTrace:
    """One text through the shipped heads by hand, every intermediate kept (W words, K tags, S states)."""

    pieces: object  # the tokenizer's encoding of TEXT, without [CLS]/[SEP]
    ids: torch.Tensor  # (1, T) with [CLS] and [SEP]
    words: list[str]  # each word as written
    word_pieces: list[list[str]]  # each word's pieces
    positions: list[int]  # each word's first piece in the ids row ([CLS] is 0)
    shapes: torch.Tensor  # (W, F) casing features
    states: torch.Tensor  # (1, T, S, C) every hidden state at every token
    lstm_in: torch.Tensor  # (1, W, C + F) what the NER BiLSTM reads
    lstm_out: torch.Tensor  # (1, W, 2 * units)
    emissions: torch.Tensor  # (W, K)
    emissions_alone: torch.Tensor  # (W, K): the BiLSTM run over each word by itself
    context_alone: torch.Tensor  # (K,): CONTEXT_WORD as the whole text
    viterbi: torch.Tensor  # (W, K): the best score of a path over words 0..t that ends in tag k
    pointers: torch.Tensor  # (W - 1, K): the tag before k on that path
    final: torch.Tensor  # (K,): viterbi[-1] + the end scores
    path: list[int]  # Viterbi's tags, walked back from the pointers
    argmax: list[int]  # each word's best tag on its own
    marginals: list[float]  # the CRF's probability of each tag on the path
    entities: list[dict]
    sentence_steps: dict[str, dict[str, torch.Tensor]]  # task -> step -> tensor
    embedding: torch.Tensor  # (C,) from the same pass


def constrained(crf) -> tuple[torch.Tensor, torch.Tensor]:
    """(start (K,), transitions (K, K)) with the moves IOB2 forbids at -inf, as CRF.decode reads them."""
    start = crf.start.detach().masked_fill(~crf.allowed_start, float("-inf"))
    return start, crf.transitions.detach().masked_fill(~crf.allowed, float("-inf"))


def path_score(crf, emissions: torch.Tensor, path: list[int]) -> float:
    """start[y0] + sum of emissions + sum of transitions + end[y_last]: -inf for a path IOB2 forbids."""
    start, transitions = constrained(crf)
    total = start[path[0]] + crf.end[path[-1]].detach() + emissions[torch.arange(len(path)), path].sum()
    return (total + sum(transitions[a, b] for a, b in zip(path, path[1:]))).item()


def ner_emissions(model: MultiTaskModel, at_words: torch.Tensor, shapes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The NER head step by step: states (1, W, S, C) at word starts -> (BiLSTM input, its output, emissions (W, K))."""
    head = model.heads["ner"]
    x = torch.cat([read_layers(head.mix, at_words), shapes[None]], dim=-1)  # (1, W, C + F)
    out = head.lstm(x, torch.ones(x.shape[:2], dtype=torch.bool))  # (1, W, 2 * units)
    return x, out, head.classifier(out)[0]  # (W, K)


@torch.no_grad()
def trace(predictor: MultiTaskPredictor, text: str = TEXT) -> HeadsTrace:
    """`text` (one window) through predictor.model by hand, as MultiTaskPredictor.predict runs it."""
    model, tokenizer = predictor.model, predictor.tokenizer
    pieces = tokenizer.split([text])[0]
    offsets = text_offsets(text, pieces, lowercased=tokenizer.lowercase)
    starts, shapes = word_features(text, pieces, offsets=offsets)
    spans = word_spans(pieces, offsets)
    word_ids = [pieces.word_ids[s] for s in starts]
    words = [text[slice(*spans[w])] for w in word_ids]
    word_pieces = [[t for t, w in zip(pieces.tokens, pieces.word_ids) if w == word] for word in word_ids]
    positions = [s + 1 for s in starts]  # +1: [CLS]
    ids = torch.tensor([[tokenizer.cls_id, *pieces.ids, tokenizer.sep_id]])  # (1, T)
    mask = torch.ones_like(ids)
    states = torch.stack(model.bert.hidden_states(ids, mask), dim=2)  # (1, T, S, C)

    lstm_in, lstm_out, emissions = ner_emissions(model, states[:, positions], shapes)
    alone = [ner_emissions(model, states[:, [p]], shapes[[i]])[2][0] for i, p in enumerate(positions)]
    lone = tokenizer.split([CONTEXT_WORD])[0]
    lone_starts, lone_shapes = word_features(CONTEXT_WORD, lone)
    lone_ids = torch.tensor([[tokenizer.cls_id, *lone.ids, tokenizer.sep_id]])
    lone_states = torch.stack(model.bert.hidden_states(lone_ids, torch.ones_like(lone_ids)), dim=2)
    context_alone = ner_emissions(model, lone_states[:, [s + 1 for s in lone_starts]], lone_shapes)[2][0]

    # Viterbi, one word at a time (CRF.decode does the same for a whole batch at once)
    crf = model.heads["ner"].crf
    start, transitions = constrained(crf)
    best = start + emissions[0]  # (K,)
    viterbi, pointers = [best], []
    for t in range(1, len(emissions)):
        moves = best[:, None] + transitions  # (K previous, K next)
        pointers.append(moves.argmax(0))  # (K,)
        best = moves.amax(0) + emissions[t]  # (K,)
        viterbi.append(best)
    final = best + crf.end.detach()
    path = [int(final.argmax())]
    for pointer in reversed(pointers):
        path.append(int(pointer[path[-1]]))
    path.reverse()
    _, (marginals,) = model.heads["ner"].decode(emissions[None], torch.ones(1, len(path), dtype=torch.bool))

    labels = model.tasks["ner"].labels
    entities = []
    for kind, a, b in bio_to_spans([labels[k] for k in path]):
        first, last = spans[word_ids[a]][0], spans[word_ids[b - 1]][1]
        score = round(sum(marginals[a:b]) / (b - a), 6)
        entities.append({"text": text[first:last], "label": kind, "start": first, "end": last, "score": score})

    sentence_steps = {}
    for name, task in model.tasks.items():
        if task.kind != "sentence":
            continue
        head = model.heads[name]
        mixed = read_layers(head.mix, states)  # (1, T, C)
        lstm = head.lstm(mixed, mask.bool())  # (1, T, 2 * units)
        pooled = torch.cat([mean_pool(lstm, mask), max_pool(lstm, mask)], dim=-1)  # (1, 4 * units)
        hidden = F.gelu(head.hidden(pooled))  # (1, hidden)
        logits = head.classifier(hidden)  # (1, K)
        sentence_steps[name] = {"mixed": mixed, "lstm": lstm, "pooled": pooled, "hidden": hidden, "logits": logits}

    out = model(ids, mask)  # the sentence heads and the embedding, as one call gives them
    for name, steps in sentence_steps.items():
        assert torch.allclose(steps["logits"], out.logits[name], atol=1e-5), f"{name}: the steps are not the head"
    return HeadsTrace(
        pieces,
        ids,
        words,
        word_pieces,
        positions,
        shapes,
        states,
        lstm_in,
        lstm_out,
        emissions,
        torch.stack(alone),
        context_alone,
        torch.stack(viterbi),
        torch.stack(pointers),
        final,
        path,
        emissions.argmax(-1).tolist(),
        marginals,
        entities,
        sentence_steps,
        out.embedding[0],
    )


# ------------------------------------------------------------------ what each part of heads.predict costs


def timed_call(totals: dict[str, float], name: str, call: Callable) -> Callable:
    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - begin

    return timed


def cost(predictor: MultiTaskPredictor, encoder: SentenceEncoder, text: str = TEXT) -> dict[str, float]:
    """Seconds per `predictor.predict([text])` call, split by part, with `encoder.encode([text])` beside it.

    The fastest of ROUNDS rounds of CALLS calls, so a busy machine's worst moments are left out. Modules are
    timed by forward hooks; the tokenizer's split and the NER head's decode by wrapping them on these
    instances for the measurement only. "rest" is what is left: offsets, word shapes, padding, spans, records.
    """
    model, totals, begun = predictor.model, {}, {}
    parts = {"encoder": [model.bert.embeddings, model.bert.encoder], **{n: [h] for n, h in model.heads.items()}}

    def started(name: str) -> Callable:
        return lambda *_: begun.update({name: time.perf_counter()})

    def finished(name: str) -> Callable:
        return lambda *_: totals.update({name: totals.get(name, 0.0) + time.perf_counter() - begun[name]})

    hooks = []
    for name, modules in parts.items():
        for module in modules:
            hooks += [module.register_forward_pre_hook(started(name)), module.register_forward_hook(finished(name))]
    ner = model.heads["ner"]
    predictor.tokenizer.split = timed_call(totals, "tokenize", predictor.tokenizer.split)
    ner.decode = timed_call(totals, "decode", ner.decode)
    rounds = []
    try:
        for _ in range(3):
            predictor.predict([text])
        for _ in range(ROUNDS):
            totals.clear()
            begin = time.perf_counter()
            for _ in range(CALLS):
                predictor.predict([text])
            rounds.append({**totals, "total": time.perf_counter() - begin})
    finally:
        for hook in hooks:
            hook.remove()
        del predictor.tokenizer.split, ner.decode  # back to the class's methods
    best = min(rounds, key=lambda r: r["total"])
    per_call = {name: seconds / CALLS for name, seconds in best.items()}
    per_call["rest"] = per_call["total"] - sum(v for k, v in per_call.items() if k != "total")
    encode = []
    for _ in range(ROUNDS):
        begin = time.perf_counter()
        for _ in range(CALLS):
            encoder.encode([text])
        encode.append((time.perf_counter() - begin) / CALLS)
    per_call["encode"] = min(encode)
    return per_call


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


# ------------------------------------------------------------------ the page's values


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def score_text(value: float) -> str:
    return "−∞" if value == float("-inf") else f"{value:+.2f}"


def probabilities(emissions: torch.Tensor, labels) -> str:
    return ", ".join(f"{label} {p:.2f}" for label, p in zip(labels, emissions.softmax(-1).tolist()))


def top(emissions: torch.Tensor, labels) -> str:
    p = emissions.softmax(-1)
    return f"{labels[int(p.argmax())]} {p.max().item():.2f}"


def values(walk: HeadsTrace, predictor: MultiTaskPredictor, encoder: SentenceEncoder) -> dict[str, str]:
    model, tokenizer = predictor.model, predictor.tokenizer
    labels = model.tasks["ner"].labels
    W, K = walk.emissions.shape
    out = {"text": TEXT, "n_words": str(W), "n_pieces": str(len(walk.pieces.ids)), "n_tokens": str(walk.ids.shape[1])}
    tokens = ["[CLS]", *walk.pieces.tokens, "[SEP]"]
    out["token_row"] = " ".join(f"{i}:`{t}`" for i, t in enumerate(tokens))

    # Word pieces to words
    rows = [row(["word", "its pieces", "position of its first piece"]), "|---|---|---:|"]
    for word, pieces, position in zip(walk.words, walk.word_pieces, walk.positions):
        rows.append(row([f"`{word}`", " ".join(f"`{p}`" for p in pieces), position]))
    out["words_table"] = "\n".join(rows)
    split = [(w, p) for w, p in zip(walk.words, walk.word_pieces) if len(p) > 1]
    out["split_words"] = " and ".join(f"`{w}` ({' + '.join(f'`{p}`' for p in ps)})" for w, ps in split)
    out["positions"] = str(walk.positions)
    out["states_shape"] = str(tuple(walk.states.shape))
    out["at_words_shape"] = str(tuple(walk.states[:, walk.positions].shape))

    # The layer mix
    mixes = {name: head.mix.weights.detach().softmax(0) for name, head in model.heads.items()}
    order = ["ner", *[n for n in mixes if n != "ner"]]
    names = ["embeddings", *[f"block {i}" for i in range(1, len(mixes["ner"]))]]
    rows = [row(["state", *[f"`{n}`" for n in order]]), "|---|" + "---:|" * len(order)]
    for s, name in enumerate(names):
        cells = [mixes[n][s].item() for n in order]
        rows.append(row([name, *[f"**{c:.3f}**" if c == mixes[n].max() else f"{c:.3f}" for c, n in zip(cells, order)]]))
    rows.append(row(["γ (scale)", *[f"{model.heads[n].mix.gamma.item():.3f}" for n in order]]))
    out["mix_table"] = "\n".join(rows)
    out["uniform"] = f"{1 / len(names):.3f}"
    out["uniform_top"] = f"{3 / len(names):.2f}"
    out["ner_middle"] = f"{mixes['ner'][2:5].sum().item():.2f}"
    out["ner_ends"] = f"{(mixes['ner'][:2].sum() + mixes['ner'][5:].sum()).item():.2f}"
    out["question_top"] = f"{mixes['question_type'][4:].sum().item():.2f}"
    out["sentiment_top"] = f"{mixes['sentiment'][4:].sum().item():.2f}"
    spread = {n: (m.max() - m.min()).item() for n, m in mixes.items()}
    out["ner_spread"] = f"{spread['ner']:.3f}"
    out["sentence_spread"] = f"{max(spread['question_type'], spread['sentiment']):.3f}"

    # Casing
    lowered = tokenizer.split([TEXT.lower()])[0].ids
    out["lower_same"] = "the same" if lowered == walk.pieces.ids else "different"
    out["lower_text"] = TEXT.lower()
    out["shape_names"] = ", ".join(f"`{s}`" for s in SHAPES)
    out["flag_names"] = ", ".join(f"`{s}`" for s in FEATURE_NAMES[len(SHAPES) :])
    out["n_features"] = str(len(FEATURE_NAMES))
    out["shapes_shape"] = str(tuple(walk.shapes.shape))
    kinds = [SHAPES[int(shape[: len(SHAPES)].argmax())] for shape in walk.shapes]
    out["shapes_line"] = ", ".join(f"`{w}` {kind}" for w, kind in zip(walk.words, kinds))
    first = walk.shapes[0].tolist()
    out["angela_features"] = "[" + ", ".join(f"{v:.0f}" for v in first) + "]"

    # The BiLSTM
    out["lstm_in_shape"] = str(tuple(walk.lstm_in.shape))
    out["lstm_out_shape"] = str(tuple(walk.lstm_out.shape))
    out["emissions_shape"] = str(tuple(walk.emissions[None].shape))
    out["hidden"] = str(walk.states.shape[-1])
    out["units"] = str(walk.lstm_out.shape[-1] // 2)
    rows = [row(["word", "in the sentence", "the BiLSTM sees the word alone"]), "|---|---|---|"]
    for word, inside, alone in zip(walk.words, walk.emissions, walk.emissions_alone):
        rows.append(row([f"`{word}`", top(inside, labels), top(alone, labels)]))
    out["context_table"] = "\n".join(rows)
    i = walk.words.index(CONTEXT_WORD)
    out["context_word"] = CONTEXT_WORD
    out["context_in"] = probabilities(walk.emissions[i], labels)
    out["context_lstm_alone"] = probabilities(walk.emissions_alone[i], labels)
    out["context_text_alone"] = probabilities(walk.context_alone, labels)
    out["labels"] = ", ".join(f"`{label}`" for label in labels)

    # The CRF: emissions of the first two words, the transitions, Viterbi
    rows = [row(["word", *[f"`{label}`" for label in labels]]), "|---|" + "---:|" * K]
    for t in range(2):
        rows.append(row([f"`{walk.words[t]}`", *[f"{e:+.2f}" for e in walk.emissions[t].tolist()]]))
    out["emissions_table"] = "\n".join(rows)
    crf = model.heads["ner"].crf
    start, transitions = constrained(crf)
    shown = [labels.index(t) for t in ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")]
    rows = [row(["from ↓ to →", *[f"`{labels[j]}`" for j in shown]]), "|---|" + "---:|" * len(shown)]
    rows.append(row(["(sentence start)", *[score_text(start[j].item()) for j in shown]]))
    for a in shown:
        rows.append(row([f"`{labels[a]}`", *[score_text(transitions[a, j].item()) for j in shown]]))
    out["transitions_table"] = "\n".join(rows)
    learned = torch.cat([start[start.isfinite()], transitions[transitions.isfinite()], crf.end.detach()])
    out["largest_transition"] = f"{learned.abs().max().item():.2f}"
    out["largest_emission"] = f"{walk.emissions.abs().max().item():.1f}"
    out["n_forbidden"] = str(int((~crf.allowed).sum()))

    rows = [row(["word", *[f"`{label}`" for label in labels], "best on its own"]), "|---|" + "---:|" * K + "---|"]
    for t, (word, scores) in enumerate(zip(walk.words, walk.viterbi.tolist())):
        cells = [f"**{score_text(s)}**" if k == walk.path[t] else score_text(s) for k, s in enumerate(scores)]
        rows.append(row([f"`{word}`", *cells, f"`{labels[walk.argmax[t]]}`"]))
    out["viterbi_table"] = "\n".join(rows)
    last = walk.path[-1]
    out["end_tag"] = labels[last]
    out["end_score"] = f"{walk.final[last].item():+.2f}"
    steps = [f"`{walk.words[-1]}` {labels[last]}"]
    for t in range(len(walk.path) - 1, 0, -1):
        steps.append(f"`{walk.words[t - 1]}` {labels[int(walk.pointers[t - 1][walk.path[t]])]}")
    out["backtrack"] = " ← ".join(steps)
    t = next(t for t in range(1, W) if walk.path[t] == labels.index("B-PER"))  # the second name's first word
    came = walk.viterbi[t - 1] + transitions[:, walk.path[t]]  # (K,): each previous tag's path, moved into B-PER
    out["step_word"], out["step_previous"] = walk.words[t], walk.words[t - 1]
    out["step_from"] = labels[int(came.argmax())]
    out["step_came"] = f"{came.max().item():+.2f}"
    out["step_emission"] = f"{walk.emissions[t, walk.path[t]].item():+.2f}"
    out["step_total"] = f"{walk.viterbi[t, walk.path[t]].item():+.2f}"
    out["step_runner_up"] = labels[int(came.topk(2).indices[1])]
    out["step_runner_up_score"] = f"{came.topk(2).values[1].item():+.2f}"
    out["viterbi_tags"] = " ".join(f"`{labels[k]}`" for k in walk.path)
    out["argmax_tags"] = " ".join(f"`{labels[k]}`" for k in walk.argmax)
    differ = [t for t in range(W) if walk.path[t] != walk.argmax[t]]
    out["differ"] = (
        ", ".join(
            f"`{walk.words[t]}` ({labels[walk.argmax[t]]} on its own, {labels[walk.path[t]]} on the path)"
            for t in differ
        )
        or "none"
    )
    steps = torch.arange(W)
    out["viterbi_emitted"] = f"{walk.emissions[steps, walk.path].sum().item():+.2f}"
    out["argmax_emitted"] = f"{walk.emissions[steps, walk.argmax].sum().item():+.2f}"
    out["viterbi_score"] = f"{path_score(crf, walk.emissions, walk.path):+.2f}"
    out["argmax_score"] = score_text(path_score(crf, walk.emissions, walk.argmax))

    rows = [row(["entity", "label", "words", "start", "end", "score (mean marginal)"]), "|---|---|---|---:|---:|---:|"]
    for (kind, a, b), entity in zip(bio_to_spans([labels[k] for k in walk.path]), walk.entities):
        words = " ".join(f"{w} `{walk.words[w]}`" for w in range(a, b))
        rows.append(row([f"`{entity['text']}`", kind, words, entity["start"], entity["end"], f"{entity['score']:.6f}"]))
    out["entities_table"] = "\n".join(rows)
    out["marginals"] = ", ".join(f"`{w}` {p:.4f}" for w, p in zip(walk.words, walk.marginals))
    record = predictor.predict([TEXT], with_embedding=True)[0]
    out["record_summary"] = ", ".join(f"`{e['text']}` ({e['label']})" for e in record["entities"])
    out["record_entities"] = str([(e["text"], e["label"], e["start"], e["end"]) for e in record["entities"]])

    # The sentence heads
    any_steps = next(iter(walk.sentence_steps.values()))
    for step in ("mixed", "lstm", "pooled", "hidden", "logits"):
        out[f"sentence_{step}_shape"] = str(tuple(any_steps[step].shape))
    for name, steps in walk.sentence_steps.items():
        task_labels = model.tasks[name].labels
        logits = steps["logits"][0]
        rows = [row(["", *[f"`{label}`" for label in task_labels]]), "|---|" + "---:|" * len(task_labels)]
        rows.append(row(["logit", *[f"{v:+.2f}" for v in logits.tolist()]]))
        rows.append(row(["softmax", *[f"{v:.3f}" for v in logits.softmax(-1).tolist()]]))
        out[f"{name}_table"] = "\n".join(rows)
        out[f"{name}_label"] = record[name]["label"]
        out[f"{name}_score"] = f"{record[name]['score']:.3f}"

    # One pass
    calls = []
    blocks = list(model.bert.encoder.layer)
    hooks = [b.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    try:
        record = predictor.predict([TEXT], with_embedding=True)[0]
    finally:
        for hook in hooks:
            hook.remove()
    runs = [calls.count(i) for i in range(len(blocks))]
    once = all(n == 1 for n in runs)
    out["block_runs"] = f"each of the {len(blocks)} blocks ran once" if once else f"the blocks ran {runs} times"
    expected = torch.from_numpy(encoder.encode(TEXT))
    out["embedding_diff"] = f"{(torch.tensor(record['embedding']) - expected).abs().max().item():.2g}"
    out["trace_diff"] = f"{(walk.embedding - expected).abs().max().item():.2g}"
    out["embedding_first"] = "[" + ", ".join(f"{v:+.4f}" for v in expected[:4].tolist()) + ", …]"

    # Cost
    seconds = cost(predictor, encoder)
    parts = [
        ("tokenize (`tokenizer.split`)", "tokenize"),
        ("encoder: embeddings and 6 blocks, once", "encoder"),
        ("`ner` head: mix, shapes, BiLSTM, linear", "ner"),
        ("`question_type` head", "question_type"),
        ("`sentiment` head", "sentiment"),
        ("CRF decoding: Viterbi and marginals (`decode`)", "decode"),
        ("the rest: offsets, word shapes, padding, spans, records", "rest"),
    ]
    rows = [row(["part of one `heads.predict` call", "ms", "share"]), "|---|---:|---:|"]
    for label, key in parts:
        ms, share = 1000 * seconds[key], seconds[key] / seconds["total"]
        rows.append(row([label, machine_dependent(f"{ms:.2f}"), machine_dependent(f"{share:.0%}")]))
    rows.append(row(["**total**", machine_dependent(f"**{1000 * seconds['total']:.2f}**"), "100%"]))
    out["cost_table"] = "\n".join(rows)
    out["encode_ms"] = machine_dependent(f"{1000 * seconds['encode']:.2f} ms")
    out["cost_ratio"] = machine_dependent(f"{seconds['total'] / seconds['encode']:.1f}×")
    heads_share = sum(seconds[n] for n in model.heads) / seconds["total"]
    out["heads_share"] = machine_dependent(f"{heads_share:.0%}")
    largest = max(("encoder", *model.heads), key=lambda k: seconds[k])
    out["largest_part"] = machine_dependent(f"`{largest}`" if largest in model.heads else "the encoder")
    out["encoder_share"] = machine_dependent(f"{seconds['encoder'] / seconds['total']:.0%}")
    out["cpu"] = machine_dependent(f"{cpu_name()}, {torch.get_num_threads()} threads")
    out["rounds"], out["calls"] = str(ROUNDS), str(CALLS)
    return out


def render(predictor: MultiTaskPredictor, encoder: SentenceEncoder) -> str:
    return fill(TEMPLATE, values(trace(predictor), predictor, encoder), Path(__file__).name)


def main() -> int:
    return write_or_check(
        OUTPUT, lambda: render(MultiTaskPredictor.from_folder(), SentenceEncoder.from_pretrained()), doc=__doc__
    )


if __name__ == "__main__":
    sys.exit(main())
