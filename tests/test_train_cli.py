"""The training command line: `python -m recsys_core.train ... --out DIR` → DIR/result.json."""
import json
import os
import subprocess
import sys

import pytest


def train_cli(*args):
    return subprocess.run([sys.executable, "-m", "recsys_core.train", *args],
                          capture_output=True, text=True)


def test_pop_on_ml100k_writes_flat_result(mirror, tmp_path):
    out = tmp_path / "pop"
    proc = train_cli("--model", "pop", "--dataset", "ml-100k", "--out", str(out),
                     "--wandb-mode", "disabled")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "COMPLETED" and result["filter_seen"] is True
    for split in ("val", "test"):
        for k in (5, 10, 20):
            for m in ("recall", "ndcg", "mrr", "precision"):
                assert 0.0 <= result[f"{split}_{m}@{k}"] <= 1.0
    assert result["test_users"] == 943 and result["test_nan_scores"] == 0
    # pop beats chance by far on ML-100K (1/1682 per slot) but is far from perfect
    assert 0.03 < result["test_recall@10"] < 0.2
    # the same figures computed here from u.data alone, without the project's code
    expected = pop_by_hand(mirror / "ml-100k" / "u.data")
    assert result["test_recall@10"] == pytest.approx(expected["recall"])
    assert result["test_precision@10"] == pytest.approx(expected["precision"])
    assert result["test_ndcg@10"] == pytest.approx(expected["ndcg"])


def pop_by_hand(path) -> dict:
    """Leave-one-out popularity on a GroupLens ratings file: each user's ratings by time (ties
    in file order); train = all but the last two; rank the last item among the items the
    user has not seen, scored by train counts, ties counted against the target."""
    import math
    from collections import Counter, defaultdict
    by_user = defaultdict(list)
    for row, line in enumerate(path.read_text().splitlines()):
        user, item, _, stamp = line.split("\t")
        by_user[user].append((int(stamp), row, item))
    sequences = {u: [item for _, _, item in sorted(rows)] for u, rows in by_user.items()}
    counts = Counter(item for seq in sequences.values() for item in seq[:-2])
    items = {item for seq in sequences.values() for item in seq}
    hits = ndcg = 0.0
    for seq in sequences.values():
        target, seen = seq[-1], set(seq[:-1])
        score = counts[target]
        rank = 1 + sum(1 for i in items if i != target and i not in seen and counts[i] >= score)
        if rank <= 10:
            hits += 1
            ndcg += 1 / math.log2(rank + 1)
    n = len(sequences)
    return {"recall": hits / n, "precision": hits / n / 10, "ndcg": ndcg / n}


def test_bad_flag_value_is_a_clear_error(tmp_path):
    proc = train_cli("--model", "pop", "--optimizer", "sgd", "--out", str(tmp_path))
    assert proc.returncode == 2 and "invalid choice: 'sgd'" in proc.stderr


def test_unknown_yaml_key_names_file_and_valid_keys(tmp_path):
    cfg = tmp_path / "cell.yaml"
    cfg.write_text("model: pop\nlearning_rate: 0.1\n")
    proc = train_cli("--config", str(cfg), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "learning_rate" in proc.stderr and "valid: " in proc.stderr


def test_a_config_or_grid_that_is_no_text_is_one_line_naming_it(tmp_path):
    """A binary file, or a YAML saved as UTF-16, as the trainer's --config or a grid: one
    line naming the file (it was UnicodeDecodeError's traceback, or a line without the file)."""
    for name, data in (("bin.yaml", bytes(range(255, -1, -1))),
                       ("utf16.yaml", "model: pop\n".encode("utf-16"))):
        path = tmp_path / name
        path.write_bytes(data)
        for proc in (train_cli("--config", str(path), "--out", str(tmp_path / "o")),
                     subprocess.run([sys.executable, "-m", "launcher", "sweep", str(path),
                                     "--executor", "dry-run", "--out", str(tmp_path / "s")],
                                    capture_output=True, text=True)):
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            assert f"{path}: not a YAML text file (byte 0 is not UTF-8)" in proc.stderr
        assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, needle", [
    (["--model", "sasrec", "--embedding-dim", "30", "--num-heads", "4"],
     "sasrec: embedding_dim must be divisible by num_heads, got embedding_dim 30 and num_heads 4"),
    (["--model", "xlstm", "--embedding-dim", "36", "--num-heads", "4"],
     "xlstm: its query/key width 18 must be divisible by num_heads"),
    (["--model", "pop", "--out", "FILE"], "a file, not a folder for the run's results"),
])
def test_what_would_fail_at_the_first_step_is_refused_before_it(tmp_path, args, needle):
    """Shapes the heads cannot split (torch's attention asserts, xLSTM's reshape fails) and an
    output path that is a file: one line, exit 2, before any data is read."""
    (tmp_path / "FILE").write_text("kept")
    args = [str(tmp_path / a) if a == "FILE" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "run")]
    proc = train_cli(*args, "--dataset", "synthetic", "--wandb-mode", "disabled")
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    assert (tmp_path / "FILE").read_text() == "kept"


def test_a_corrupt_mirror_file_is_one_line_naming_it_and_a_failed_result(mirror, tmp_path):
    bad = tmp_path / "mirror" / "ml-100k"
    bad.mkdir(parents=True)
    (bad / "u.data").write_bytes((mirror / "ml-100k" / "u.data").read_bytes()[:100_000])
    (bad / "u.item").write_bytes((mirror / "ml-100k" / "u.item").read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_core.train", "--model", "pop", "--dataset", "ml-100k",
         "--data-mirror", str(tmp_path / "mirror"), "--wandb-mode", "disabled",
         "--out", str(tmp_path / "run")], capture_output=True, text=True,
        env={**os.environ, "RECSYS_DATA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{bad / 'u.data'}: checksum mismatch" in proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "FAILED" and "checksum mismatch" in result["reason"]


def test_a_filter_that_keeps_no_user_is_one_line_and_a_failed_result(tmp_path):
    # was a RuntimeError from deep in the attention's reshape, at the first batch of nothing
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_core.train", "--model", "sasrec", "--dataset",
         "synthetic", "--min-user-interactions", "100000", "--epochs", "1", "--max-len", "8",
         "--embedding-dim", "8", "--num-heads", "1", "--num-blocks", "1", "--device", "cpu",
         "--wandb-mode", "disabled", "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
        env={**os.environ, "RECSYS_DATA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "synthetic: no user has min_user_interactions=100000 interactions (its most " \
        "active user has" in proc.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "FAILED" and "lower min_user_interactions" in result["reason"]


def test_a_synthetic_shape_its_overrides_break_is_one_line_and_a_failed_result(tmp_path):
    # synthetic-ml-1m has 40 clusters: 30 items pass the config's check of the overrides
    # (against the default 10 clusters) and fail when the shape is made, in the job
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_core.train", "--model", "pop", "--dataset",
         "synthetic-ml-1m", "--synthetic", '{"n_items": 30}', "--device", "cpu",
         "--wandb-mode", "disabled", "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
        env={**os.environ, "RECSYS_DATA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "synthetic: n_clusters=40: expected 1 to n_items (30)" in proc.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "FAILED"
