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


@pytest.mark.parametrize("host_read", [True, False])    # False: as on a GPU, no host read
def test_ranks_match_brute_force_with_ties_nans_and_history(host_read):
    g = torch.Generator().manual_seed(0)
    b, v = 64, 40
    scores = torch.randint(0, 6, (b, v), generator=g).float()      # many ties
    scores[torch.rand(b, v, generator=g) < 0.1] = float("nan")
    targets = torch.randint(1, v - 2, (b,), generator=g)
    history = torch.randint(0, v - 2, (b, 7), generator=g)
    history[:3, 0] = targets[:3]                                   # target in its own history
    r, nan = ranks(scores, targets, history=history, n_valid=v - 2,   # last 2 columns: e.g. [MASK]
                   host_read=host_read)
    for i in range(b):
        expected = brute_rank(scores[i].tolist(), int(targets[i]), history[i].tolist(), v - 2)
        assert int(r[i]) == expected, i
        cand = set(range(1, v - 2)) - set(history[i].tolist()) | {int(targets[i])}
        assert int(nan[i]) == sum(math.isnan(scores[i, c]) for c in cand)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ranks_with_infinities_repeated_history_and_reduced_precision(dtype):
    """±inf scores (a -inf target ties with every candidate), the same item several times in
    a history, history ids past n_valid, and bf16 scores ranked as they are."""
    g = torch.Generator().manual_seed(1)
    b, v, n_valid = 96, 30, 27
    scores = torch.randint(0, 4, (b, v), generator=g).float()
    u = torch.rand(b, v, generator=g)
    scores[u < 0.08] = float("nan")
    scores[(u > 0.08) & (u < 0.14)] = float("-inf")
    scores[u > 0.95] = float("inf")
    scores = scores.to(dtype)
    targets = torch.randint(1, n_valid, (b,), generator=g)
    history = torch.randint(0, v, (b, 9), generator=g)
    history[:, 1] = history[:, 0]                                  # repeated items
    history[::4, 2] = targets[::4]
    r, nan = ranks(scores, targets, history=history, n_valid=n_valid)
    assert (scores[torch.arange(b), targets].float() == float("-inf")).any()
    for i in range(b):
        row = scores[i].float().tolist()
        assert int(r[i]) == brute_rank(row, int(targets[i]), history[i].tolist(), n_valid), i
        cand = set(range(1, n_valid)) - set(history[i].tolist()) | {int(targets[i])}
        assert int(nan[i]) == sum(math.isnan(row[c]) for c in cand)
    r_all, _ = ranks(scores, targets)                               # no history, no n_valid
    for i in range(b):
        assert int(r_all[i]) == brute_rank(scores[i].float().tolist(), int(targets[i]), [], v)


@pytest.mark.parametrize("host_read", [True, False])
def test_nan_counts_are_exact_whether_or_not_a_batch_holds_a_nan(host_read):
    scores = torch.arange(24.0).reshape(2, 12)
    targets = torch.tensor([4, 7])
    assert ranks(scores, targets, host_read=host_read)[1].tolist() == [0, 0]
    scores[0, 3], scores[1, 5] = float("inf"), float("-inf")       # their sum is NaN: no NaN
    assert ranks(scores, targets, host_read=host_read)[1].tolist() == [0, 0]
    scores[1, 9] = scores[1, 10] = float("nan")
    scores[0, 0] = float("nan")                                    # padding: not a candidate
    r, nan = ranks(scores, targets, history=torch.tensor([[0, 0], [10, 10]]), host_read=host_read)
    assert nan.tolist() == [0, 1]                                 # 10 is excluded, 9 is not
    assert r.tolist() == [9, 3]            # 3 (inf) and 4-11 ≥ 4; 7, 8 and 11 ≥ 7 (9 NaN, 10 seen)


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


def test_the_gpu_counting_kernel_gives_the_ranks_and_nan_counts_torch_gives(tmp_path):
    """rank_counts.py's kernel (the GPU's path of ranks) under Triton's interpreter: the same
    ranks and NaN counts as torch's comparisons and sums, fp32 and bf16, with a history,
    columns past n_valid and rows of a wider block (tests/helpers/rank_twin.py)."""
    from tests.helpers.interpreter import interpreted
    results = interpreted("rank_twin", tmp_path=tmp_path)
    assert all(r["history"] and r["plain"] for r in results), results
    assert all(r["plain_nans"] > 0 for r in results)      # the blocks did hold NaN candidates
