"""heads.ner and heads.metrics: sub-token alignment with the real tokenizer, conlleval chunking,
sliding windows, and entity F1 cross-checked against seqeval on corrupted real CoNLL tags.
"""

from __future__ import annotations

import random
from functools import cache

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support
from tokenizers import Tokenizer

from heads.data import CONLL_TAGS, TokenExample, read_conll
from heads.features import word_starts
from heads.metrics import accuracy, entity_scores
from heads.ner import (
    bio_to_spans,
    joined_text,
    project_tags,
    window_owners,
)
from minilm.text.windows import token_windows

from conftest import require_data

TAG_ID = {tag: i for i, tag in enumerate(CONLL_TAGS)}


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    from minilm.weights import resolve_checkpoint

    tok = Tokenizer.from_file(str(resolve_checkpoint().path / "tokenizer.json"))
    tok.no_truncation()  # tokenizer.json pins 128 tokens of truncation and padding; we want every piece
    tok.no_padding()
    return tok


@cache
def conll(split: str) -> tuple[TokenExample, ...]:
    return tuple(read_conll(require_data(f"conll2003/{split}.txt")))


# ---- bio_to_spans -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags, spans",
    [
        ([], []),
        (["O", "O"], []),
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),  # entity at the end
        (["I-PER", "I-PER", "O"], [("PER", 0, 2)]),  # stray I- at the start starts a chunk
        (["O", "I-ORG", "O"], [("ORG", 1, 2)]),  # stray I- after O
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),  # I-X after B-Y: new chunk
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),  # adjacent B-X B-X: two chunks
        (["B-MISC", "I-MISC", "I-MISC"], [("MISC", 0, 3)]),
        (["I-LOC", "B-LOC"], [("LOC", 0, 1), ("LOC", 1, 2)]),
        (["B-ORG", "O", "I-ORG"], [("ORG", 0, 1), ("ORG", 2, 3)]),  # O ends a chunk; the I- after it is new
    ],
)
def test_bio_to_spans_follows_conlleval(tags, spans):
    assert bio_to_spans(tags) == spans


def test_bio_to_spans_rejects_non_iob2_tags():
    for bad in (["B-PER", "E-PER"], ["PER"], ["B-"], ["S-LOC"]):
        with pytest.raises(ValueError, match="IOB2"):
            bio_to_spans(bad)


# ---- windows ------------------------------------------------------------------------------------------


def test_token_windows_hand_cases():
    assert token_windows(0, 4, 2) == [(0, 0)]
    assert token_windows(3, 4, 2) == [(0, 3)]
    assert token_windows(4, 4, 2) == [(0, 4)]
    assert token_windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert token_windows(11, 4, 3) == [(0, 4), (3, 7), (6, 10), (9, 11)]
    assert token_windows(8, 4, 4) == [(0, 4), (4, 8)]  # stride == size: touching, no overlap
    for n, size, stride in [(-1, 4, 2), (5, 0, 1), (5, 4, 0), (5, 4, 5)]:
        with pytest.raises(ValueError, match="need n >= 0"):
            token_windows(n, size, stride)


@pytest.mark.parametrize("size, stride", [(1, 1), (2, 1), (5, 2), (5, 5), (6, 4), (8, 3), (254, 128)])
def test_token_windows_cover_everything_with_bounded_size_and_exact_overlap(size, stride):
    for n in list(range(0, 40)) + [253, 254, 255, 600, 1000]:
        windows = token_windows(n, size, stride)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(0 <= end - start <= size for start, end in windows)
        assert all(end - start == size for start, end in windows[:-1])  # only the last may be short
        for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
            assert next_start - start == stride
            assert end - next_start == size - stride  # the overlap
            assert next_end > end  # every window adds new tokens
        covered = {t for start, end in windows for t in range(start, end)}
        assert covered == set(range(n))


def test_window_owners_pick_the_most_central_window():
    windows = token_windows(10, 6, 2)
    assert windows == [(0, 6), (2, 8), (4, 10)]
    #                     token: 0  1  2  3  4  5  6  7  8  9
    assert window_owners(windows) == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    # token 3: context min(3, 2) = 2 in window 0 beats min(1, 4) = 1 in window 1
    # token 4: min(2, 3) = 2 in window 1 beats min(4, 1) = 1 and min(0, 5) = 0
    # a tie in context goes to the longer window: token 2 has context 2 in both (0, 5) and (0, 8)
    assert window_owners([(0, 5), (0, 8)])[2] == 1
    # a full tie goes to the earlier window: token 2 has context 1 in (0, 4) and (1, 5)
    assert window_owners([(0, 4), (1, 5)])[2] == 0
    assert window_owners([(0, 0)]) == []
    with pytest.raises(ValueError, match="token 3 is in no window"):
        window_owners([(0, 3), (4, 6)])


def test_window_owner_context_is_maximal_among_windows_holding_the_token():
    for n, size, stride in [(37, 8, 3), (100, 16, 5), (50, 10, 10), (9, 4, 1)]:
        windows = token_windows(n, size, stride)
        owners = window_owners(windows)

        def context(w: int, t: int) -> int:
            start, end = windows[w]
            return min(t - start, end - 1 - t)

        for t, owner in enumerate(owners):
            start, end = windows[owner]
            assert start <= t < end
            assert context(owner, t) == max(context(w, t) for w, (s, e) in enumerate(windows) if s <= t < e)


def test_accuracy():
    assert accuracy(["a", "b", "c", "d"], ["a", "b", "x", "d"]) == 0.75
    assert accuracy([1], [1]) == 1.0
    with pytest.raises(ValueError, match="3 predictions but 2"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no examples"):
        accuracy([], [])


def test_entity_scores_hand_computed():
    # gold: PER(0,2) LOC(3,4) ORG(5,6); predicted: PER(0,2) right, LOC(5,6) wrong type -> 1 of 2 right, 1 of 3 found
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O", "O", "B-LOC"]]
    scores = entity_scores(pred, gold)
    assert scores["precision"] == 0.5
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (1, 2, 3)
    assert scores["per_type"]["PER"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "correct": 1,
        "predicted": 1,
        "gold": 1,
    }
    assert scores["per_type"]["LOC"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "correct": 0,
        "predicted": 1,
        "gold": 1,
    }
    assert scores["per_type"]["ORG"]["recall"] == 0.0 and scores["per_type"]["ORG"]["precision"] == 0.0


def test_entity_scores_need_exact_boundaries_and_count_stray_i_tags():
    gold = [["B-PER", "I-PER", "O"], ["O", "B-ORG", "I-ORG"]]
    pred = [["B-PER", "O", "O"], ["O", "I-ORG", "I-ORG"]]  # PER cut short: wrong; stray I-ORG chunk: right
    scores = entity_scores(pred, gold)
    assert (scores["correct"], scores["predicted"], scores["gold"]) == (1, 2, 2)
    assert scores["f1"] == 0.5


def test_entity_scores_zero_divisions_are_zero():
    assert entity_scores([["O", "O"]], [["B-LOC", "O"]])["precision"] == 0.0  # nothing predicted
    assert entity_scores([["B-LOC", "O"]], [["O", "O"]])["recall"] == 0.0  # nothing to find
    empty = entity_scores([["O"]], [["O"]])
    assert (empty["precision"], empty["recall"], empty["f1"], empty["per_type"]) == (0.0, 0.0, 0.0, {})
    with pytest.raises(ValueError, match="sentence 1: 1 predicted tags but 2 gold tags"):
        entity_scores([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="1 predicted sentences but 2 gold"):
        entity_scores([["O"]], [["O"], ["O"]])


def corrupt(tags: tuple[str, ...], rng: random.Random) -> list[str]:
    """Seeded damage of the kinds a weak tagger makes; each kind applies to about 15% of sentences."""
    out = list(tags)
    n = len(out)
    types = ["PER", "ORG", "LOC", "MISC"]
    spans = bio_to_spans(out)
    if rng.random() < 0.15:  # random tag replacements
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(n)] = rng.choice(CONLL_TAGS)
    if rng.random() < 0.15:  # stray I-: a B- turned into I-, or an I- dropped onto an O
        i = rng.randrange(n)
        out[i] = ("I-" + out[i][2:]) if out[i].startswith("B-") else "I-" + rng.choice(types)
    if spans and rng.random() < 0.15:  # boundary shifts: grow or shrink an entity by one word at either end
        kind, start, end = rng.choice(spans)
        move = rng.choice(["grow_right", "shrink_right", "grow_left", "shrink_left"])
        if move == "grow_right" and end < n:
            out[end] = "I-" + kind
        elif move == "shrink_right" and end - start > 1:
            out[end - 1] = "O"
        elif move == "grow_left" and start > 0:
            out[start - 1], out[start] = "B-" + kind, "I-" + kind
        elif move == "shrink_left" and end - start > 1:
            out[start], out[start + 1] = "O", "B-" + kind
    if spans and rng.random() < 0.15:  # type swap of a whole entity
        kind, start, end = rng.choice(spans)
        new = rng.choice([t for t in types if t != kind])
        out[start:end] = ["B-" + new] + ["I-" + new] * (end - start - 1)
    if rng.random() < 0.05:  # an entity missed entirely
        out = ["O"] * n
    return out


@pytest.fixture(scope="module")
def dev_gold_and_corrupted() -> tuple[list[list[str]], list[list[str]]]:
    rng = random.Random(2003)
    gold = [list(s.tags) for s in conll("dev")]
    return gold, [corrupt(tuple(tags), rng) for tags in gold]


def test_bio_to_spans_matches_seqeval_chunking_on_corrupted_dev(dev_gold_and_corrupted):
    gold, corrupted = dev_gold_and_corrupted
    stray = 0
    for tags in gold + corrupted:
        # seqeval gives (type, start, end_inclusive)
        assert bio_to_spans(tags) == [(kind, start, end + 1) for kind, start, end in get_entities(tags)]
        stray += sum(1 for i, t in enumerate(tags) if t.startswith("I-") and (i == 0 or tags[i - 1][2:] != t[2:]))
    assert stray > 100  # the corruption really made conlleval's stray-I- rule matter


def test_entity_scores_match_seqeval_on_corrupted_dev(dev_gold_and_corrupted):
    gold, corrupted = dev_gold_and_corrupted
    ours = entity_scores(corrupted, gold)
    assert ours["precision"] == pytest.approx(precision_score(gold, corrupted), abs=1e-9)
    assert ours["recall"] == pytest.approx(recall_score(gold, corrupted), abs=1e-9)
    assert ours["f1"] == pytest.approx(f1_score(gold, corrupted), abs=1e-9)
    assert 0.5 < ours["f1"] < 0.95  # damaged enough to test something, not so much that all is wrong
    assert ours["gold"] == 5942  # entities in CoNLL-2003 dev (1837 LOC + 922 MISC + 1341 ORG + 1842 PER B- tags)

    # per type: seqeval orders types alphabetically, as we do
    precision, recall, f1, support = precision_recall_fscore_support(gold, corrupted, average=None)
    per_type = ours["per_type"]
    assert list(per_type) == ["LOC", "MISC", "ORG", "PER"]
    for i, kind in enumerate(per_type):
        assert per_type[kind]["precision"] == pytest.approx(precision[i], abs=1e-9)
        assert per_type[kind]["recall"] == pytest.approx(recall[i], abs=1e-9)
        assert per_type[kind]["f1"] == pytest.approx(f1[i], abs=1e-9)
        assert per_type[kind]["gold"] == support[i]

    perfect = entity_scores(gold, gold)
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)


# ---- joined_text / project_tags --------------------------------------------------------------------


def test_joined_text_offsets_point_at_each_word():
    text, starts = joined_text(["U.S.", "troops", "left", "."])
    assert text == "U.S. troops left ."
    assert starts == [0, 5, 12, 17]
    assert [text[s : s + len(w)] for s, w in zip(starts, ["U.S.", "troops", "left", "."])] == [
        "U.S.",
        "troops",
        "left",
        ".",
    ]
    assert joined_text([]) == ("", [])


def test_project_tags_splits_a_word_into_one_entity():
    # "U.S." (B-LOC) is read as U . S . ; "New York-based" keeps its I- after the first piece
    word_starts = [0, 5, 12]
    tags = ["B-LOC", "O", "B-MISC"]
    pieces = [0, 1, 2, 3, 5, 12, 13, 14]  # U . S . | troops | Anglo - Saxon
    assert project_tags(word_starts, tags, pieces) == [
        "B-LOC",
        "I-LOC",
        "I-LOC",
        "I-LOC",
        "O",
        "B-MISC",
        "I-MISC",
        "I-MISC",
    ]
    # the tokenizer dropped the entity's first word (a zero-width space): its next piece starts the entity
    assert project_tags([0, 2], ["B-LOC", "I-LOC"], [2]) == ["B-LOC"]
    assert project_tags([0, 2, 7], ["B-LOC", "I-LOC", "I-LOC"], [2, 7]) == ["B-LOC", "I-LOC"]
    assert project_tags([0, 3], ["B-PER", "B-PER"], [0, 3]) == ["B-PER", "B-PER"]  # two entities stay two
    with pytest.raises(ValueError, match="before the first word"):
        project_tags([2], ["O"], [0])


def test_projected_chunks_have_the_words_character_extent(tokenizer):
    """On real CoNLL sentences: the chunks of the projected tags, in characters, are the gold entities'."""
    for sentence in conll("dev")[:300]:
        text, starts = joined_text(sentence.words)
        encoding = tokenizer.encode(text, add_special_tokens=False)
        pieces = word_starts(encoding.word_ids)
        tags = project_tags(starts, sentence.tags, [encoding.offsets[p][0] for p in pieces])
        ends = {}
        for position, word in enumerate(encoding.word_ids):
            ends[word] = encoding.offsets[position][1]
        piece_ends = [ends[encoding.word_ids[p]] for p in pieces]
        projected = {(k, encoding.offsets[pieces[a]][0], piece_ends[b - 1]) for k, a, b in bio_to_spans(tags)}
        gold = {(k, starts[a], starts[b - 1] + len(sentence.words[b - 1])) for k, a, b in bio_to_spans(sentence.tags)}
        assert projected == gold, text
