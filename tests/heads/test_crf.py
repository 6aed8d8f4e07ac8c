"""heads.crf against brute force: the forward algorithm, path scores and Viterbi are checked by enumerating
all K^T tag paths of small random cases; BIO constraints by an independent IOB2 validity check; and a few
hundred Adam steps on a tiny synthetic task show the likelihood trains. Tier 1: CPU, no data, milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pytest
import torch

from heads.crf import CRF, FORBIDDEN, bio_transitions
from heads.data import CONLL_TAGS
from heads.ner import IGNORE_INDEX

TAG_ID = {tag: i for i, tag in enumerate(CONLL_TAGS)}


def random_crf(num_tags: int, seed: int, constrained: bool = False) -> CRF:
    """A float64 CRF with random scores; `constrained` also forbids a random ~third of the moves and starts."""
    g = torch.Generator().manual_seed(seed)
    allowed = allowed_start = None
    if constrained:
        allowed = torch.rand(num_tags, num_tags, generator=g) > 0.35
        allowed_start = torch.rand(num_tags, generator=g) > 0.35
        allowed[0, 0] = allowed_start[0] = True  # tag 0 throughout is always allowed, so some path is
    crf = CRF(num_tags, allowed, allowed_start).double()
    with torch.no_grad():
        for p in (crf.transitions, crf.start, crf.end):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    return crf


def random_batch(num_tags: int, lengths: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(emissions (B, T, K) float64, mask (B, T)) right-padded to the longest length; padding holds noise too."""
    g = torch.Generator().manual_seed(seed)
    emissions = 2 * torch.randn(len(lengths), max(lengths), num_tags, generator=g, dtype=torch.float64)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    return emissions, mask


def hand_score(crf: CRF, emissions: torch.Tensor, path: Sequence[int]) -> float:
    """start + emissions + transitions + end, summed in Python floats; a forbidden move scores FORBIDDEN."""
    trans, start, end = crf.transitions.tolist(), crf.start.tolist(), crf.end.tolist()
    allowed, allowed_start = crf.allowed.tolist(), crf.allowed_start.tolist()
    e = emissions.tolist()  # (L, K): one row's real steps only
    total = start[path[0]] if allowed_start[path[0]] else FORBIDDEN
    for t, tag in enumerate(path):
        total += e[t][tag]
        if t > 0:
            total += trans[path[t - 1]][tag] if allowed[path[t - 1]][tag] else FORBIDDEN
    return total + end[path[-1]]


def all_paths(num_tags: int, length: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(num_tags), repeat=length))


def is_allowed(crf: CRF, path: Sequence[int]) -> bool:
    return bool(crf.allowed_start[path[0]]) and all(bool(crf.allowed[i, j]) for i, j in zip(path, path[1:]))


def valid_iob2(tags: Sequence[str]) -> bool:
    """Written apart from bio_transitions: an I-X must come right after B-X or I-X, never first."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:  # previous "O" has no type: ""[2:] is ""
            return False
        previous = tag
    return True


CASES = [  # (K, lengths of the batch's rows): batches mix lengths, so most rows are padded
    (3, [1]),
    (3, [4, 2, 1, 3]),
    (4, [3, 3]),
    (4, [2, 4, 1]),
    (5, [4, 1, 3]),
    (5, [1, 2]),
]


# ---- log_partition, score, decode against brute force ----------------------------------------------


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize(("num_tags", "lengths"), CASES)
def test_log_partition_is_logsumexp_over_every_path(num_tags, lengths, constrained):
    for seed in range(3):
        crf = random_crf(num_tags, seed, constrained)
        emissions, mask = random_batch(num_tags, lengths, seed + 100)
        got = crf.log_partition(emissions, mask)
        assert got.shape == (len(lengths),)
        for b, length in enumerate(lengths):
            # constrained: only allowed paths, so forbidden ones must add nothing to the partition function
            scores = [
                hand_score(crf, emissions[b, :length], path)
                for path in all_paths(num_tags, length)
                if not constrained or is_allowed(crf, path)
            ]
            expected = max(scores) + math.log(sum(math.exp(s - max(scores)) for s in scores))
            assert got[b].item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("constrained", [False, True])
def test_score_is_the_hand_sum_of_start_emissions_transitions_end(constrained):
    crf = random_crf(4, seed=7, constrained=constrained)
    emissions, mask = random_batch(4, [5, 3, 1], seed=8)
    g = torch.Generator().manual_seed(9)
    for _ in range(20):
        tags = torch.randint(0, 4, (3, 5), generator=g)
        got = crf.score(emissions, tags, mask)
        for b, length in enumerate([5, 3, 1]):
            path = tags[b, :length].tolist()
            assert got[b].item() == pytest.approx(hand_score(crf, emissions[b, :length], path), abs=1e-9)


def test_score_of_one_path_written_out():
    crf = random_crf(4, seed=7)
    emissions, mask = random_batch(4, [5], seed=8)
    e, tr, s, en = emissions[0], crf.transitions, crf.start, crf.end
    by_hand = s[2] + e[0, 2] + tr[2, 0] + e[1, 0] + tr[0, 0] + e[2, 0] + tr[0, 3] + e[3, 3] + tr[3, 1] + e[4, 1] + en[1]
    got = crf.score(emissions, torch.tensor([[2, 0, 0, 3, 1]]), mask)
    assert got.item() == pytest.approx(by_hand.item(), abs=1e-12)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize(("num_tags", "lengths"), CASES)
def test_decode_is_the_brute_force_argmax(num_tags, lengths, constrained):
    for seed in range(3):
        crf = random_crf(num_tags, seed, constrained)
        emissions, mask = random_batch(num_tags, lengths, seed + 200)
        paths = crf.decode(emissions, mask)
        assert [len(p) for p in paths] == lengths
        for b, length in enumerate(lengths):
            candidates = [p for p in all_paths(num_tags, length) if not constrained or is_allowed(crf, p)]
            scores = [hand_score(crf, emissions[b, :length], p) for p in candidates]
            best = max(range(len(candidates)), key=scores.__getitem__)
            assert tuple(paths[b]) == candidates[best]
            decoded = crf.score(emissions[b : b + 1, :length], torch.tensor([paths[b]]), mask[b : b + 1, :length])
            assert decoded.item() == pytest.approx(scores[best], abs=1e-9)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize(("num_tags", "lengths"), CASES)
def test_marginals_are_the_brute_force_tag_probabilities(num_tags, lengths, constrained):
    """p(tag k at step t) = sum of exp(score) over the paths through (t, k), over the sum over all paths."""
    crf = random_crf(num_tags, 7, constrained)
    emissions, mask = random_batch(num_tags, lengths, 300)
    marginals = crf.marginals(emissions, mask)
    assert marginals.shape == emissions.shape
    for b, length in enumerate(lengths):
        paths = all_paths(num_tags, length)
        weights = [math.exp(hand_score(crf, emissions[b, :length], p)) for p in paths]
        total = sum(weights)
        expected = torch.zeros(length, num_tags, dtype=torch.float64)
        for path, weight in zip(paths, weights):
            expected[torch.arange(length), list(path)] += weight / total
        assert torch.allclose(marginals[b, :length], expected, atol=1e-9)
        assert torch.all(marginals[b, length:] == 0)  # padding
    assert torch.allclose(marginals.sum(-1), mask.double())  # a distribution over tags at every real step


# ---- BIO constraints -------------------------------------------------------------------------------


def test_bio_transitions_for_conll_tags():
    allowed, allowed_start = bio_transitions(CONLL_TAGS)
    assert allowed.shape == (9, 9) and allowed.dtype == torch.bool
    assert [CONLL_TAGS[j] for j in range(9) if not allowed_start[j]] == ["I-PER", "I-ORG", "I-LOC", "I-MISC"]
    into_i_per = [CONLL_TAGS[i] for i in range(9) if allowed[i, TAG_ID["I-PER"]]]
    assert into_i_per == ["B-PER", "I-PER"]
    for j, tag in enumerate(CONLL_TAGS):  # O and B-X may follow anything
        if not tag.startswith("I-"):
            assert allowed[:, j].all()
    assert int(allowed.sum()) == 81 - 4 * 7  # each I-X is barred after 7 of the 9 tags
    with pytest.raises(ValueError, match="'E-PER'"):
        bio_transitions(["O", "B-PER", "E-PER"])
    with pytest.raises(ValueError, match="'B-'"):
        bio_transitions(["O", "B-"])


def test_constrained_decode_never_emits_invalid_iob2():
    crf = CRF(9, *bio_transitions(CONLL_TAGS))
    free = CRF(9)  # the same scores without the constraints, to show the check has something to catch
    lengths = [60, 60, 45, 33, 20, 8, 2, 1]
    mask = torch.arange(60) < torch.tensor(lengths)[:, None]  # (8, 60)
    invalid_without_constraints = 0
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in ("transitions", "start", "end"):
                scores = 3 * torch.randn(getattr(crf, name).shape, generator=g)
                getattr(crf, name).copy_(scores)
                getattr(free, name).copy_(scores)
        emissions = 4 * torch.randn(8, 60, 9, generator=g)
        emissions[..., [2, 4, 6, 8]] += 2  # lean on the I-X tags, so unconstrained paths often break IOB2
        for path, length in zip(crf.decode(emissions, mask), lengths):
            assert len(path) == length
            assert valid_iob2([CONLL_TAGS[i] for i in path])
        invalid_without_constraints += sum(
            not valid_iob2([CONLL_TAGS[i] for i in p]) for p in free.decode(emissions, mask)
        )
    assert invalid_without_constraints > 80  # of 160 paths: without the constraints most are invalid

    # decoding uses -inf for forbidden moves, so no emission, however large, can buy one
    emissions = torch.zeros(1, 3, 9)
    emissions[0, :, TAG_ID["I-LOC"]] = 1e6
    assert [CONLL_TAGS[i] for i in crf.decode(emissions, mask[:1, :3])[0]] == ["B-LOC", "I-LOC", "I-LOC"]


def test_constrained_decode_is_the_best_valid_iob2_path():
    crf = CRF(9, *bio_transitions(CONLL_TAGS)).double()
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in (crf.transitions, crf.start, crf.end):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        emissions, mask = random_batch(9, [4, 3, 1], seed + 300)
        emissions[..., [2, 4, 6, 8]] += 3  # the unconstrained best would often be invalid
        for b, (path, length) in enumerate(zip(crf.decode(emissions, mask), [4, 3, 1])):
            valid = [p for p in all_paths(9, length) if valid_iob2([CONLL_TAGS[i] for i in p])]
            best = max(valid, key=lambda p: hand_score(crf, emissions[b, :length], p))
            assert tuple(path) == best


def test_forbidden_moves_keep_gradients_finite_and_untouched():
    crf = CRF(9, *bio_transitions(CONLL_TAGS))
    emissions = torch.randn(2, 6, 9, requires_grad=True)
    tags = torch.tensor([[1, 2, 0, 5, 6, 6], [0, 3, 4, 0, 0, 0]])
    mask = torch.ones(2, 6, dtype=torch.bool)
    loss = crf.neg_log_likelihood(emissions, tags, mask)
    loss.backward()
    assert torch.isfinite(loss)
    for grad in (crf.transitions.grad, crf.start.grad, crf.end.grad, emissions.grad):
        assert torch.isfinite(grad).all()
    assert (crf.transitions.grad[~crf.allowed] == 0).all()  # masked_fill: no gradient reaches a forbidden move
    assert (crf.start.grad[~crf.allowed_start] == 0).all()


# ---- mask handling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("constrained", [False, True])
def test_padding_never_changes_log_partition_score_or_decode(constrained):
    crf = random_crf(5, seed=11, constrained=constrained)
    g = torch.Generator().manual_seed(12)
    row = torch.randn(1, 4, 5, generator=g, dtype=torch.float64)
    row_tags = torch.tensor([[0, 0, 0, 0]])  # allowed even under constraints (tag 0 throughout)
    full = torch.ones(1, 4, dtype=torch.bool)
    alone = crf.log_partition(row, full).item(), crf.score(row, row_tags, full).item(), crf.decode(row, full)[0]

    for trial in range(5):
        # the same row in slot 1 of a batch of 3, padded to 9 steps with large noise and IGNORE_INDEX tags
        emissions = 50 * torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
        emissions[1, :4] = row[0]
        tags = torch.randint(0, 5, (3, 9), generator=g)
        tags[1, :4] = row_tags[0]
        tags[1, 4:] = IGNORE_INDEX
        mask = torch.arange(9) < torch.tensor([9, 4, 2 + trial])[:, None]
        assert crf.log_partition(emissions, mask)[1].item() == pytest.approx(alone[0], abs=1e-12)
        assert crf.score(emissions, tags, mask)[1].item() == pytest.approx(alone[1], abs=1e-12)
        assert crf.decode(emissions, mask)[1] == alone[2]


# ---- training --------------------------------------------------------------------------------------


def test_adam_on_the_likelihood_learns_to_recover_gold_paths():
    # Each tag once, in a valid IOB2 order: every tag has one successor, so the transitions alone can carry
    # the path and the CRF must learn them to see through emissions too noisy to read one word at a time.
    gold = [TAG_ID[t] for t in ("B-PER", "I-PER", "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG")]
    assert valid_iob2([CONLL_TAGS[i] for i in gold])
    g = torch.Generator().manual_seed(0)
    lengths = torch.arange(16) % 5 + 5  # prefixes of 5..9 words, so training runs through padding too
    mask = torch.arange(9) < lengths[:, None]  # (16, 9)
    tags = torch.tensor(gold).repeat(16, 1)  # (16, 9)
    emissions = torch.nn.functional.one_hot(tags, 9).float() + 1.5 * torch.randn(16, 9, 9, generator=g)
    golds = [gold[:n] for n in lengths.tolist()]

    crf = CRF(9)  # zeros: untrained, it decodes word by word
    word_by_word = emissions.argmax(-1)[mask] == tags[mask]
    assert word_by_word.float().mean() < 0.5  # the noise hides most tags from a per-word argmax
    assert all(p != q for p, q in zip(crf.decode(emissions, mask), golds))  # untrained: every sentence is wrong

    optimizer = torch.optim.Adam(crf.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        loss = crf.neg_log_likelihood(emissions, tags, mask)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    assert crf.decode(emissions, mask) == golds


def test_reductions_and_saved_constraints():
    crf = CRF(9, *bio_transitions(CONLL_TAGS))
    emissions = torch.randn(3, 5, 9)
    tags = torch.zeros(3, 5, dtype=torch.long)
    mask = torch.arange(5) < torch.tensor([5, 3, 1])[:, None]
    per_row = crf.neg_log_likelihood(emissions, tags, mask, reduction="none")
    assert per_row.shape == (3,) and (per_row > 0).all()
    assert crf.neg_log_likelihood(emissions, tags, mask).item() == pytest.approx(per_row.mean().item())
    assert crf.neg_log_likelihood(emissions, tags, mask, reduction="sum").item() == pytest.approx(per_row.sum().item())
    loaded = CRF(9)
    loaded.load_state_dict(crf.state_dict())  # strict: the constraints are buffers and travel with the weights
    assert torch.equal(loaded.allowed, crf.allowed) and torch.equal(loaded.allowed_start, crf.allowed_start)


def test_marginals_work_inside_inference_mode():
    """heads.predict may run under a caller's torch.inference_mode(); the autograd trick must still work."""
    crf = random_crf(4, 3).float()
    emissions, mask = random_batch(4, [3, 2], 5)
    expected = crf.marginals(emissions.float(), mask)
    with torch.inference_mode():
        inside = crf.marginals(emissions.float(), mask)
        made_inside = crf.marginals(emissions.float() * 1, mask)  # an inference tensor coming in
    assert torch.allclose(inside, expected) and torch.allclose(made_inside, expected)
