"""A linear-chain conditional random field over per-word tag scores, in plain torch.

The CRF of Lafferty et al. 2001, used as the output layer of BiLSTM-CRF NER (Lample et al. 2016, section 2.2).
A tag path y_0 .. y_{L-1} scores

    start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{L-1}]

and training maximizes log p(y | x) = score(y) - logsumexp of the score over all K^L paths. The forward
algorithm computes that logsumexp in O(L K^2); Viterbi finds the best path the same way with max for logsumexp.

Shapes: B batch, T steps (words), K tags. A mask (B, T) is True on real steps, padded on the right,
and every row has at least one real step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

# A forbidden move's score in the likelihood: exp() of it is 0 in float32, yet sums and gradients stay finite.
FORBIDDEN = -1e4


def bio_transitions(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(allowed (K, K), allowed_start (K,)) bool for IOB2 labels such as heads.data.CONLL_TAGS.

    I-X may only follow B-X or I-X, and no sentence starts with I-X. Everything else is allowed,
    so every output is a sequence that conlleval reads without a stray I-X.
    """
    for label in labels:
        if label != "O" and (label[:2] not in ("B-", "I-") or len(label) == 2):
            raise ValueError(f"label {label!r}: expected 'O', 'B-TYPE' or 'I-TYPE' (IOB2)")
    allowed = torch.ones(len(labels), len(labels), dtype=torch.bool)  # [i, j]: may tag j follow tag i?
    allowed_start = torch.ones(len(labels), dtype=torch.bool)
    for j, label in enumerate(labels):
        if label.startswith("I-"):
            kind = label[2:]
            allowed[:, j] = torch.tensor([before in (f"B-{kind}", f"I-{kind}") for before in labels])
            allowed_start[j] = False
    return allowed, allowed_start


class CRF(nn.Module):
    """Learned start, transition and end scores over K tags; the emissions come from the head below it.

    `allowed` (K, K) and `allowed_start` (K,) are bool masks of permitted moves (default: all). They are
    buffers, so they are saved with the weights and a loaded CRF keeps its constraints. Gold paths must obey
    them (every CoNLL-2003 sentence does): a forbidden gold move costs about 1e4 of loss that no step can lower.
    """

    def __init__(
        self, num_tags: int, allowed: torch.Tensor | None = None, allowed_start: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [i, j]: tag i, then tag j
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        if allowed is None:
            allowed = torch.ones(num_tags, num_tags, dtype=torch.bool)
        if allowed_start is None:
            allowed_start = torch.ones(num_tags, dtype=torch.bool)
        if allowed.shape != (num_tags, num_tags) or allowed_start.shape != (num_tags,):
            raise ValueError(f"allowed must be ({num_tags}, {num_tags}) and allowed_start ({num_tags},)")
        self.register_buffer("allowed", allowed.bool().clone())
        self.register_buffer("allowed_start", allowed_start.bool().clone())

    def _constrained(self, forbidden: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(start (K,), transitions (K, K)) with every forbidden move set to `forbidden`.

        masked_fill rather than adding a penalty: the forbidden entries get no gradient and never drift.
        """
        start = self.start.masked_fill(~self.allowed_start, forbidden)
        return start, self.transitions.masked_fill(~self.allowed, forbidden)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log of the sum over all tag paths of exp(score): emissions (B, T, K), mask (B, T) -> (B,)."""
        start, transitions = self._constrained(FORBIDDEN)
        # alpha[b, k]: logsumexp of the scores of every path over steps 0..t that ends in tag k
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.size(1)):
            # (B, K, 1) previous tag + (K, K) move + (B, 1, K) next tag's emission, summed out over the previous tag
            step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)  # (B, K)
            alpha = torch.where(mask[:, t, None], step, alpha)  # a padded step carries the row's last real step on
        return torch.logsumexp(alpha + self.end, dim=1)  # (B,)

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The score of given paths: emissions (B, T, K), tags (B, T) long, mask (B, T) -> (B,)."""
        start, transitions = self._constrained(FORBIDDEN)
        tags = tags.masked_fill(~mask, 0)  # padding may hold IGNORE_INDEX (-100); its terms are masked out anyway
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T): each step's score for its tag
        moved = transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1): the move into step t from step t-1
        last = tags.gather(1, mask.sum(1, keepdim=True) - 1).squeeze(1)  # (B,): the tag at each row's last real step
        emitted = emitted.masked_fill(~mask, 0).sum(1)  # (B,)
        moved = moved.masked_fill(~mask[:, 1:], 0).sum(1)  # (B,)
        return start[tags[:, 0]] + emitted + moved + self.end[last]

    def neg_log_likelihood(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> torch.Tensor:
        """-log p(tags | emissions) per sentence, (B,), then averaged or summed over sentences."""
        nll = self.log_partition(emissions, mask) - self.score(emissions, tags, mask)  # (B,)
        if reduction == "none":
            return nll
        return nll.mean() if reduction == "mean" else nll.sum()

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """p(tag k at step t | emissions) for every step and tag: (B, T, K), zero on padded steps.

        The forward-backward marginals, taken as the gradient of log_partition with respect to the
        emissions (d log Z / d emissions[t, k] is exactly that probability), so no backward pass is hand-written.
        """
        # inference_mode(False) as well as enable_grad: a caller's torch.inference_mode() would refuse the graph
        with torch.inference_mode(False), torch.enable_grad():
            emissions = emissions.detach().clone().requires_grad_(True)  # clone: a normal tensor, not an inference one
            (grad,) = torch.autograd.grad(self.log_partition(emissions, mask.clone()).sum(), emissions)
        return grad.masked_fill(~mask.unsqueeze(-1), 0.0)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi: each row's best tag path over its real steps. emissions (B, T, K), mask (B, T)."""
        # -inf, not FORBIDDEN: decoding needs no gradient, and no emission, however large, can buy a forbidden move
        start, transitions = self._constrained(float("-inf"))
        best = start + emissions[:, 0]  # (B, K): the best score of a path over steps 0..t that ends in tag k
        backpointers = []  # per step t >= 1, (B, K): the previous tag on the best path into tag k
        for t in range(1, emissions.size(1)):
            moves = best.unsqueeze(2) + transitions  # (B, K previous, K next)
            # amax and argmax, not max(dim=1): on a busy 2-core CPU that values-and-indices kernel ran ~100x slower
            backpointers.append(moves.argmax(dim=1))  # (B, K)
            best = torch.where(mask[:, t, None], moves.amax(dim=1) + emissions[:, t], best)  # (B, K)
        last = (best + self.end).argmax(dim=1).tolist()  # (B,)
        pointers = torch.stack(backpointers, dim=1).tolist() if backpointers else []  # (B, T-1, K), one copy to host
        paths = []
        for b, length in enumerate(mask.sum(1).tolist()):
            path = [last[b]]
            for t in range(length - 1, 0, -1):  # walk back from the row's last real step
                path.append(pointers[b][t - 1][path[-1]])
            paths.append(path[::-1])
        return paths
