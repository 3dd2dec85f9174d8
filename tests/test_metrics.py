"""Full-ranking metrics against a brute-force reference (ties, NaNs, seen-item filtering)."""
import math

import pytest
import torch

from recsys_core.metrics import metrics_from_ranks, ranks


def brute_rank(scores, target, history, n_valid):
    """Rank by the definition: 1 + other candidates scoring >= the target; NaN = worst."""
    def val(x):
        return -math.inf if math.isnan(x) else x
    t = val(scores[target])
    excluded = {0, *history} - {target}
    others = [i for i in range(n_valid) if i not in excluded and i != target]
    return 1 + sum(val(scores[i]) >= t for i in others)


def test_ranks_match_brute_force_with_ties_nans_and_history():
    g = torch.Generator().manual_seed(0)
    b, v = 64, 40
    scores = torch.randint(0, 6, (b, v), generator=g).float()      # many ties
    scores[torch.rand(b, v, generator=g) < 0.1] = float("nan")
    targets = torch.randint(1, v - 2, (b,), generator=g)
    history = torch.randint(0, v - 2, (b, 7), generator=g)
    history[:3, 0] = targets[:3]                                   # target in its own history
    r, nan = ranks(scores, targets, history=history, n_valid=v - 2)  # last 2 columns: e.g. [MASK]
    for i in range(b):
        expected = brute_rank(scores[i].tolist(), int(targets[i]), history[i].tolist(), v - 2)
        assert int(r[i]) == expected, i
        cand = set(range(1, v - 2)) - set(history[i].tolist()) | {int(targets[i])}
        assert int(nan[i]) == sum(math.isnan(scores[i, c]) for c in cand)


def test_all_equal_scores_rank_last_and_padding_is_never_a_candidate():
    scores = torch.zeros(2, 11)
    scores[:, 0] = 100.0                                           # padding scores highest
    r, _ = ranks(scores, torch.tensor([3, 5]))
    assert r.tolist() == [10, 10]                                  # pessimistic: 10 candidates


def test_nan_target_is_worst():
    scores = torch.arange(10.0).repeat(1, 1)
    scores[0, 9] = float("nan")
    r, nan = ranks(scores, torch.tensor([9]))
    assert int(r[0]) == 9 and int(nan[0]) == 1


def test_metric_values_from_known_ranks():
    m = metrics_from_ranks(torch.tensor([1, 2, 11, 5]), ks=[10])
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert m["precision@10"] == pytest.approx(3 / 4 / 10)
