"""Leave-one-out: targets never leak into training, inputs end where they should."""
import torch

from recsys_core.data import LeaveOneOut, load_dataset


def make_split():
    data = load_dataset("synthetic", synthetic={"n_users": 60, "n_items": 50, "seed": 1})
    return data, LeaveOneOut.from_data(data)


def test_targets_are_the_last_two_items_and_never_train_targets():
    data, split = make_split()
    for u in range(data.n_users):
        seq = data.items[data.offsets[u]:data.offsets[u + 1]]
        assert int(split.targets("val")[u]) == seq[-2]
        assert int(split.targets("test")[u]) == seq[-1]
    starts, ends = split.train_windows(max_len=4)
    # every train window stays inside its user's train part
    user = torch.searchsorted(split.offsets, starts, right=True) - 1
    assert bool((ends <= split.train_ends[user]).all())
    val_pos = split.target_index("val")
    covered = torch.zeros(len(split.items), dtype=torch.long)
    for s, e in zip(starts.tolist(), ends.tolist()):
        covered[max(s + 1, e - 4):e] += 1       # positions that are targets in this window
    assert covered[val_pos].sum() == 0 and covered[split.target_index("test")].sum() == 0
    # every train item but each user's first is a target exactly once
    first = split.offsets[:-1]
    train = torch.zeros(len(split.items), dtype=torch.bool)
    for u in range(split.n_users):
        train[first[u] + 1:split.train_ends[u]] = True
    assert torch.equal(covered[train], torch.ones(int(train.sum()), dtype=torch.long))


def test_test_input_ends_with_validation_item_and_is_left_padded():
    data, split = make_split()
    test_in = split.inputs("test", 5)
    val_in = split.inputs("val", 5)
    assert torch.equal(test_in[:, -1], split.targets("val"))
    assert torch.equal(test_in[:, :-1], val_in[:, 1:])
    short = int(data.lengths.argmin())
    n = int(data.lengths[short])
    wide = split.inputs("test", n + 3)[short]
    assert wide[:4].tolist() == [0, 0, 0, 0] and bool((wide[4:] > 0).all())


def test_history_holds_everything_before_the_target():
    data, split = make_split()
    hist = split.history("test")
    for u in (0, 7, 59):
        seq = data.items[data.offsets[u]:data.offsets[u + 1]]
        assert sorted(x for x in hist[u].tolist() if x) == sorted(seq[:-1].tolist())
    # a batch's width read from the host's lengths (no read of the device) is the one it gets
    for which in ("val", "test"):
        users = torch.tensor([3, 59, 7])
        width = split.history_width(which, users)
        assert torch.equal(split.history(which, users, width=width), split.history(which, users))


def test_train_item_counts_exclude_val_and_test():
    data, split = make_split()
    counts = split.train_item_counts()
    assert int(counts.sum()) == data.n_interactions - 2 * data.n_users
