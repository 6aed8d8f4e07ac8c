"""minilm.text.windows.text_windows on real long texts: the spans cover each text with the stated
overlap of word pieces, start and end on piece boundaries, and a short text is one window, whole."""

from __future__ import annotations

from minilm.text.windows import text_offsets, text_windows, token_windows


def test_spans_cover_a_long_text_with_the_stated_overlap(encoder, stsb_sentences):
    tokenizer = encoder.tokenizer
    long_text = " ".join(stsb_sentences[:60])  # 446 word pieces
    short = stsb_sentences[0]
    spans_long, spans_short = text_windows(tokenizer, [long_text, short], size=128, stride=96)
    assert spans_short == [(0, len(short))]
    offsets = text_offsets(long_text, tokenizer.split([long_text])[0], lowercased=tokenizer.lowercase)
    windows = token_windows(len(offsets), 128, 96)
    assert len(spans_long) == len(windows) == 5
    starts = {start for start, _ in offsets}
    ends = {end for _, end in offsets}
    for (start, end), (first, last) in zip(spans_long, windows):
        assert start in starts and end in ends  # on word-piece boundaries
        inside = [i for i, (s, e) in enumerate(offsets) if s >= start and e <= end]
        assert inside == list(range(first, last))  # exactly the window's pieces
    for (_, last), (next_first, _) in zip(windows, windows[1:]):
        assert last - next_first == 128 - 96  # consecutive windows share 32 pieces
    assert spans_long[0][0] == 0 and spans_long[-1][1] == len(long_text.rstrip())
