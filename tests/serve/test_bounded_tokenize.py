"""The server reads a very long text only as far as the model needs, and gets the same tokens as the
whole text would (app.tokenize_bounded against SentenceTokenizer.encode of the whole text)."""

from __future__ import annotations

from minilm.serve.app import PREFIX_CHARS_PER_TOKEN, tokenize_bounded

from conftest import read_stsb, require_data


def test_long_texts_cut_at_a_space_give_the_whole_texts_first_tokens(encoder):
    _, first, second = read_stsb("test")
    news = open(require_data("conll2003/test.txt"), encoding="utf-8").read().split()
    bound = PREFIX_CHARS_PER_TOKEN * encoder.max_seq_length
    texts = [
        " ".join(first * 3),  # about 140,000 characters of real sentences: cut
        " ".join(news[:20000]),  # real news words, cut
        "a " * 40000,  # one-letter words: cut
        "x" * 200 + " " + "y" * 300 + " " + "z" * (bound * 2),  # huge words: too few pieces in the prefix, read whole
        "é" * (bound + 10),  # no space at all: read whole
        second[0],  # short: untouched
    ]
    assert all(len(t) > bound for t in texts[:5])
    got, counts = tokenize_bounded(encoder.tokenizer, texts)
    whole, exact = encoder.tokenizer.encode(texts)
    for g, w, n, m in zip(got, whole, counts, exact):
        assert g.ids == w.ids and g.offsets == w.offsets  # the same tokens, pointing into the same text
        assert (n > encoder.max_seq_length) == (m > encoder.max_seq_length)  # truncated exactly when it is
        assert n <= m
    assert counts[0] < exact[0] and counts[3] == exact[3] and counts[5] == exact[5]  # cut, read whole, untouched
