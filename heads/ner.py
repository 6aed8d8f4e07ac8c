"""NER helpers between words and WordPiece sub-tokens, and between long sentences and encoder windows.

Pure functions, no tensors. What each reproduces:
  * `bio_to_spans`: the chunk rules of conlleval, the CoNLL-2000/2003 scoring script, for IOB2 tags.
  * `joined_text` / `project_tags`: a CoNLL sentence as the raw text a user would type (words joined by
    single spaces), and its tags carried onto the words the tokenizer's pre-tokenizer finds in that text.
    The heads train on exactly what heads.predict sees: "U.S." is one CoNLL word but four raw-text
    words ("U", ".", "S", "."), tagged B-LOC I-LOC I-LOC I-LOC.
  * `window_owners`: for the sliding "doc stride" windows of BERT's run_squad.py
    (minilm.text.windows.token_windows), its `_check_is_max_context` rule for which window a token's
    prediction comes from.

A token head reads each word at its first sub-token, as BERT's NER recipe does (Devlin et al. 2019,
section 5.3): heads.features.word_starts finds those positions.

Word indices and token positions are 0-based; spans and windows are half-open (start, end_exclusive).
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index: these positions add no loss


def bio_to_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """IOB2 tags -> entity spans (type, start, end_exclusive) in word indices, by conlleval's chunk rules.

    B-X starts a chunk. I-X continues a chunk of type X. A stray I-X (at the start, after O, or
    after a chunk of another type) starts a new chunk rather than being dropped: conlleval and
    seqeval score it that way, so we must too. O ends any chunk.
    """
    spans = []
    kind, start = None, 0  # the open chunk's type (None: no chunk open) and where it began
    for i, tag in enumerate(tags):
        if tag == "O":
            prefix, tag_kind = "O", None
        else:
            prefix, _, tag_kind = tag.partition("-")
            if prefix not in ("B", "I") or not tag_kind:
                raise ValueError(f"tag {i} is {tag!r}: expected 'O', 'B-TYPE' or 'I-TYPE' (IOB2)")
        continues = prefix == "I" and tag_kind == kind
        if kind is not None and not continues:
            spans.append((kind, start, i))
            kind = None
        if prefix != "O" and not continues:
            kind, start = tag_kind, i
    if kind is not None:
        spans.append((kind, start, len(tags)))  # an entity that runs to the end of the sentence
    return spans


def joined_text(words: Sequence[str]) -> tuple[str, list[int]]:
    """Words -> (the words joined by single spaces, each word's character offset in that text)."""
    starts, position = [], 0
    for word in words:
        starts.append(position)
        position += len(word) + 1
    return " ".join(words), starts


def project_tags(word_starts: Sequence[int], tags: Sequence[str], piece_starts: Sequence[int]) -> list[str]:
    """IOB2 tags of words at character offsets `word_starts` -> tags of the smaller pieces that split them.

    `piece_starts`: where each piece (a raw-text word of the tokenizer, in text order) begins. A piece
    takes the tag of the word it lies in; a piece after the first of its word continues it (B-X -> I-X),
    so every entity keeps its character extent and its count, and the pieces' IOB2 chunks are the words'.
    Where the tokenizer dropped the first word of an entity entirely (a lone zero-width space), its next
    piece becomes B-X, so the tags stay a sequence the CRF's IOB2 constraints allow.
    """
    out, word = [], -1
    for start in piece_starts:
        first = False
        while word + 1 < len(word_starts) and word_starts[word + 1] <= start:
            word, first = word + 1, True
        if word < 0:
            raise ValueError(f"a piece starts at {start}, before the first word")
        tag = tags[word]
        if tag != "O" and not first:
            tag = "I-" + tag[2:]  # the word's entity goes on
        elif tag.startswith("I-") and (not out or out[-1][2:] != tag[2:] or out[-1] == "O"):
            tag = "B-" + tag[2:]  # its first words left no piece (the tokenizer dropped them): it starts here
        out.append(tag)
    return out


def _context_score(window: tuple[int, int], position: int) -> tuple[int, int]:
    """(tokens of context on the token's poorer side, window length), compared in that order.

    run_squad adds `0.01 * length` to the context instead; past 100 tokens that bonus can outweigh a
    real context difference, so here the length only breaks ties.
    """
    start, end = window
    return min(position - start, end - 1 - position), end - start


def window_owners(windows: Sequence[tuple[int, int]]) -> list[int]:
    """For each token 0..n-1 (n = the largest window end), the index of the window whose prediction it takes.

    A token seen by several overlapping windows takes the window where it is farthest from an edge,
    that is, where it has the most context on its poorer side (BERT run_squad's `_check_is_max_context`).
    Ties go to the longer window, then to the earlier one.
    """
    n = max((end for _, end in windows), default=0)
    by_start = sorted(range(len(windows)), key=lambda w: windows[w][0])
    owners: list[int] = []
    holding: list[int] = []  # the windows that hold `position`, in input order (a sweep, so linear in n)
    added = 0
    for position in range(n):
        while added < len(by_start) and windows[by_start[added]][0] <= position:
            holding.append(by_start[added])
            added += 1
        holding = sorted(w for w in holding if position < windows[w][1])
        if not holding:
            raise ValueError(f"token {position} is in no window")
        # max() keeps the first of equal scores: the earlier window wins a full tie.
        owners.append(max(holding, key=lambda w: _context_score(windows[w], position)))
    return owners
