"""recsys_core.analysis: the measures on inputs with known answers, then each analysis end to
end on tiny trained runs (synthetic data, ~1 s each)."""
import json
import os

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core.analysis import gini, run_dirs
from recsys_core.analysis import geometry as geo
from recsys_core.analysis.__main__ import main as analysis_main
from recsys_core.analysis.longtail import longtail, popularity_groups
from recsys_core.data.split import LeaveOneOut
from recsys_core.train import TrainConfig, run

TINY = dict(dataset="synthetic", synthetic={"n_users": 120, "n_items": 60,
                                            "n_interactions": 3000, "seed": 5},
            max_len=10, embedding_dim=16, num_heads=2, num_blocks=1, batch_size=64, lr=3e-3,
            epochs=2, patience=10, device="cpu", wandb_mode="disabled")


@pytest.fixture(autouse=True)
def one_thread():
    # On a busy 2-core machine, 2 intra-op threads wait on each other (100x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- measures with known answers ---------------------------------------------------------------

def test_isotropic_gaussian_uses_every_dimension():
    emb = np.random.default_rng(0).normal(size=(4000, 16))
    eig = geo.spectrum(emb)
    assert 14.5 < geo.participation_ratio(eig) <= 16
    assert geo.dims_for(eig, 0.9) in (14, 15)
    assert abs(geo.anisotropy(emb)) < 0.01


def test_rank_two_embeddings_use_two_dimensions():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(32, 2)))[0].T          # 2 orthonormal rows
    coords = rng.normal(size=(5000, 2))
    coords = (coords - coords.mean(0)) / coords.std(0)            # equal variances
    eig = geo.spectrum(coords @ basis)
    assert geo.dims_for(eig, 0.9) == 2 and np.all(eig[2:] < 1e-13 * eig[0])
    assert geo.participation_ratio(eig) == pytest.approx(2.0, rel=1e-3)


def test_spectrum_is_the_squared_singular_values_of_the_centred_table():
    rng = np.random.default_rng(3)
    emb = (rng.normal(size=(3000, 24)) @ rng.normal(size=(24, 24)) * 0.05 + 1).astype(np.float32)
    singular = np.linalg.svd(emb.astype(np.float64) - emb.mean(0, dtype=np.float64),
                             compute_uv=False)
    eig = geo.spectrum(emb)
    assert eig.shape == (24,) and np.all(np.diff(eig) <= 0)
    np.testing.assert_allclose(eig, singular ** 2 / 2999, rtol=1e-9)


def test_anisotropy_is_the_mean_pairwise_cosine():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(50, 8)) * 0.1 + rng.normal(size=8)    # a narrow cone
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = u @ u.T
    brute = (cos.sum() - np.trace(cos)) / (50 * 49)
    assert geo.anisotropy(emb) == pytest.approx(brute) and brute > 0.9


def test_cosine_knn_matches_brute_force():
    emb = np.random.default_rng(3).normal(size=(70, 5))
    u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    brute = np.argsort(-sim, axis=1)[:, :4]
    assert (geo.cosine_knn(emb, 4, block=16) == brute).all()


def test_hub_dominated_graph_has_high_skewness_and_gini():
    n, k = 200, 5
    ring = np.array([[(i + j) % n for j in range(1, k + 1)] for i in range(n)])
    flat = geo.hubness(ring, n)                       # everyone is a neighbour k times
    assert flat["hub_skewness"] == 0 and flat["hub_gini"] == 0
    hubs = ring.copy()
    for i in range(1, n):                              # item 0 joins every other list
        if 0 not in hubs[i]:
            hubs[i, -1] = 0
    hubbed = geo.hubness(hubs, n)
    assert hubbed["hub_max_k_occurrence"] == n - 1
    assert hubbed["hub_skewness"] > 10 and hubbed["hub_gini"] > 0.15


def test_skewness_is_scipys():
    from scipy.stats import skew
    rng = np.random.default_rng(0)
    for x in (rng.exponential(size=500), rng.integers(0, 40, 300), np.array([1, 1, 1, 9])):
        assert geo.skewness(x) == pytest.approx(float(skew(x)), rel=1e-10)
    assert geo.skewness(np.full(7, 3)) == 0.0


def test_gini_known_values():
    assert gini([1, 1, 1, 1]) == 0
    assert gini([0, 0, 0, 1]) == pytest.approx(0.75)
    assert gini([0, 0, 0, 0]) == 0


def test_linear_cka_is_one_for_a_rotated_scaled_copy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 12))
    q = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    assert geo.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-10)
    assert geo.linear_cka(x, rng.normal(size=(300, 12))) < 0.2


def test_knn_overlap():
    a = np.array([[1, 2, 3], [0, 2, 3]])
    assert geo.knn_overlap(a, a[:, ::-1]) == 1.0
    assert geo.knn_overlap(a, np.array([[1, 5, 6], [4, 5, 6]])) == pytest.approx((1 / 3) / 2)


def test_tsne_keeps_clusters_apart():
    rng = np.random.default_rng(5)
    centres = np.eye(10)[:3] * 5
    emb = np.concatenate([c + rng.normal(size=(30, 10)) * 0.3 for c in centres])
    xy = geo.tsne(emb, perplexity=10, iterations=400)
    labels = np.repeat(np.arange(3), 30)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.95


# --- long tail on a constructed scorer ---------------------------------------------------------

def tiny_split():
    seqs = [[1, 2, 3, 4, 5], [1, 2, 1, 6, 7], [2, 1, 3, 8], [1, 2, 9, 10], [3, 1, 2, 4, 1, 2]]
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    return LeaveOneOut(len(seqs), 10, torch.as_tensor(offsets), torch.as_tensor(sum(seqs, [])))


def scorer(history):
    """Distinct scores per row: (7 i + 3 · last item) mod 11 for items i = 1..10."""
    items = torch.arange(11)
    return ((7 * items[None, :] + 3 * history[:, -1:]) % 11).float()


def test_popularity_groups_head_tail_and_ties():
    labels = popularity_groups(np.array([5, 1, 3, 3, 0, 0, 2, 9, 1, 0]))
    assert list(np.flatnonzero(labels == "head")) == [0, 7]            # top 20%: counts 5, 9
    assert list(np.flatnonzero(labels == "tail")) == [1, 4, 5, 8, 9]  # bottom 50%, ties by id


@pytest.mark.parametrize("filter_seen", [True, False])
def test_longtail_equals_a_brute_force_count(filter_seen):
    split, k = tiny_split(), 3
    summary, rec, labels = longtail(scorer, split, max_len=4, filter_seen=filter_seen, k=k)
    counts = np.bincount(np.concatenate([s[:-2] for s in [split.items[a:b].tolist() for a, b in
                                         zip(split.offsets[:-1], split.offsets[1:])]]), minlength=11)[1:]
    assert (split.train_item_counts()[1:].numpy() == counts).all()
    groups = popularity_groups(counts)
    ranks, expected_rec = [], np.zeros(10, dtype=int)
    for u in range(split.n_users):
        seq = split.items[split.offsets[u]:split.offsets[u + 1]].tolist()
        history, target = seq[:-1], seq[-1]
        score = {i: (7 * i + 3 * history[-1]) % 11 for i in range(1, 11)}
        seen = set(history) if filter_seen else set()
        ranks.append(1 + sum(score[i] > score[target] for i in score if i not in seen or i == target))
        top = sorted((i for i in score if i not in seen), key=lambda i: -score[i])[:k]
        expected_rec[np.array(top) - 1] += 1
    ranks = np.array(ranks)
    targets = np.array([split.items[split.offsets[u + 1] - 1].item() for u in range(5)])
    assert (rec == expected_rec).all() and (labels == groups).all()
    for g in ("all", "head", "mid", "tail"):
        sel = ranks[(groups[targets - 1] == g) | (g == "all")]
        hit = sel <= k
        assert summary[f"users_{g}"] == len(sel)
        if len(sel):
            assert summary[f"recall@{k}_{g}"] == pytest.approx(hit.mean())
            assert summary[f"ndcg@{k}_{g}"] == pytest.approx((hit / np.log2(sel + 1)).mean())
    assert summary[f"share_tail_in_top{k}"] == pytest.approx(expected_rec[groups == "tail"].sum() / (5 * k))
    assert summary["coverage"] == pytest.approx((expected_rec > 0).mean())
    assert summary["gini_recommendations"] == pytest.approx(gini(expected_rec))


# --- end to end on tiny trained runs -----------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECSYS_DATA_CACHE", str(root / "cache"))
    torch.set_num_threads(1)
    out = {}
    for name, model, seed in [("sas1", "sasrec", 1), ("sas2", "sasrec", 2),
                              ("bert", "bert4rec", 1), ("pop", "pop", 1)]:
        record = run(TrainConfig(**TINY, model=model, seed=seed, out=str(root / name)))
        assert record["status"] == "COMPLETED"
        out[name] = root / name
    yield out
    mp.undo()


def test_geometry_end_to_end(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(runs["sas1"].parent / "cache"))
    paths = [str(runs[n]) for n in ("sas1", "sas2", "bert", "pop")]
    assert analysis_main(["geometry", *paths, "--out", str(tmp_path), "--tsne-iterations",
                          "100", "--tsne-points", "40"]) == 0
    table = pd.read_csv(tmp_path / "geometry.csv")
    assert list(table["model"]) == ["sasrec", "sasrec", "bert4rec"]       # pop: no embeddings
    assert (table["n_items"] == 60).all() and (table["dim"] == 16).all()  # bert4rec's [mask] row dropped
    assert ((1 <= table["dims_90"]) & (table["dims_90"] <= 16)).all()
    pairs = pd.read_csv(tmp_path / "geometry_pairs.csv")
    assert len(pairs) == 3 and pairs["linear_cka"].between(0, 1 + 1e-9).all()
    assert pairs["same_model"].sum() == 1 and pairs["knn_overlap@10"].between(0, 1).all()
    assert (tmp_path / "geometry.png").stat().st_size > 10_000 and (tmp_path / "geometry.md").exists()


def test_longtail_end_to_end_agrees_with_the_trainer(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(runs["sas1"].parent / "cache"))
    assert analysis_main(["longtail", str(runs["sas1"]), str(runs["pop"]), "--out",
                          str(tmp_path), "--top", "20"]) == 0
    table = pd.read_csv(tmp_path / "longtail.csv")
    for i, name in enumerate(("sas1", "pop")):   # the same ranks as the trainer's test metrics
        result = json.loads((runs[name] / "result.json").read_text())
        assert table.loc[i, "recall@10_all"] == pytest.approx(result["test_recall@10"])
        assert table.loc[i, "ndcg@10_all"] == pytest.approx(result["test_ndcg@10"])
        assert table.loc[i, "users_head"] + table.loc[i, "users_mid"] + \
            table.loc[i, "users_tail"] == table.loc[i, "users"] == 120
    assert table["coverage"].between(10 / 60, 1).all()
    top = pd.read_csv(tmp_path / f"longtail_top20_{table.loc[0, 'run']}.csv")
    assert len(top) == 20 and top["title"].notna().all() and top["share_of_users"].le(1).all()
    assert top["recommended"].is_monotonic_decreasing
    assert (tmp_path / "longtail.png").exists() and (tmp_path / "longtail.md").exists()


def test_the_trainers_long_tail_figures_are_the_analysis_clis(runs, tmp_path, monkeypatch):
    """What every result records of the long tail (recsys_core/train/recorded.py) is what the
    analysis computes from the run's best_model.pt."""
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(runs["sas1"].parent / "cache"))
    names = ("sas1", "bert", "pop")
    assert analysis_main(["longtail", *(str(runs[n]) for n in names), "--out", str(tmp_path),
                          "--top", "5"]) == 0
    table = pd.read_csv(tmp_path / "longtail.csv")
    figures = [c for c in table.columns
               if c not in ("run", "model", "dataset", "seed", "filter_seen", "users")]
    assert len(figures) == 19
    for i, name in enumerate(names):
        result = json.loads((runs[name] / "result.json").read_text())
        assert table.loc[i, "model"] == result["model"]
        assert {c: result[f"longtail_{c}"] for c in figures} == pytest.approx(
            table.loc[i, figures].to_dict(), rel=1e-9), name


def test_the_trainers_geometry_is_the_analysis_clis(runs, tmp_path, monkeypatch):
    """What every result records of the item-embedding geometry (recsys_core/train/recorded.py)
    is the analysis' per-run row from best_model.pt; pop, without embeddings, records none."""
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(runs["sas1"].parent / "cache"))
    names = ("sas1", "bert", "pop")
    assert analysis_main(["geometry", *(str(runs[n]) for n in names), "--out", str(tmp_path),
                          "--tsne-iterations", "10", "--tsne-points", "20"]) == 0
    table = pd.read_csv(tmp_path / "geometry.csv")
    figures = [c for c in table.columns if c not in ("run", "model", "dataset", "seed", "path")]
    assert len(figures) == 9
    for i, name in enumerate(names[:2]):
        result = json.loads((runs[name] / "result.json").read_text())
        assert {c: result[f"geometry_{c}"] for c in figures} == pytest.approx(
            table.loc[i, figures].to_dict(), rel=1e-9), name
    pop = json.loads((runs["pop"] / "result.json").read_text())
    assert not any(k.startswith("geometry_") for k in pop)


def test_combine_joins_slices_and_keeps_the_newest_row_of_a_run(runs, tmp_path, monkeypatch,
                                                                   capsys):
    """Two device calls' outputs: sas1 and bert in `first`; sas2 and sas1 again, re-analysed
    later with other settings, in `second`. Combined: each run once, sas1's row the newer."""
    monkeypatch.setenv("RECSYS_DATA_CACHE", str(runs["sas1"].parent / "cache"))
    first, second = tmp_path / "first", tmp_path / "second"
    tsne = ["--tsne-iterations", "50", "--tsne-points", "20"]
    for where, names, k, head in ((first, ("sas1", "bert", "pop"), "10", "0.2"),
                                  (second, ("sas2", "sas1"), "5", "0.3")):
        paths = [str(runs[n]) for n in names]
        assert analysis_main(["geometry", *paths, "--out", str(where / "geometry"), "--k", k,
                              *tsne]) == 0
        assert analysis_main(["longtail", *paths, "--out", str(where / "longtail"), "--head",
                              head, "--top", "5"]) == 0
    old = (second / "geometry" / "geometry.csv").stat().st_mtime - 60
    for path in first.rglob("*.csv"):
        os.utime(path, (old, old))
    capsys.readouterr()
    out = tmp_path / "combined"
    # the older folder last: the file's age decides, not the order given
    assert analysis_main(["combine", str(second), str(first), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    geometry = pd.read_csv(out / "geometry.csv")
    assert list(geometry["run"]) == ["bert4rec-synthetic-L10-s1", "sasrec-synthetic-L10-s1",
                                     "sasrec-synthetic-L10-s2"]      # once each, sorted; no pop
    newer = pd.read_csv(second / "geometry" / "geometry.csv").set_index("run")
    kept = geometry.set_index("run").loc["sasrec-synthetic-L10-s1"]
    assert kept["source"] == str(second / "geometry" / "geometry.csv")
    older = pd.read_csv(first / "geometry" / "geometry.csv").set_index("run")
    assert kept["hub_gini"] == pytest.approx(newer.loc["sasrec-synthetic-L10-s1", "hub_gini"])
    assert kept["hub_gini"] != older.loc["sasrec-synthetic-L10-s1", "hub_gini"]     # k 5 vs 10
    assert f"sasrec-synthetic-L10-s1: kept the row of {second / 'geometry' / 'geometry.csv'}" \
        in printed
    longtail = pd.read_csv(out / "longtail.csv")
    assert sorted(longtail["run"]) == ["bert4rec-synthetic-L10-s1", "pop-synthetic-L10-s1",
                                       "sasrec-synthetic-L10-s1", "sasrec-synthetic-L10-s2"]
    heads = longtail.set_index("run")["items_head"]
    assert heads["sasrec-synthetic-L10-s1"] == 18 and heads["pop-synthetic-L10-s1"] == 12
    by_model = pd.read_csv(out / "geometry_by_model.csv").set_index("model")
    sas = geometry[geometry["model"] == "sasrec"]
    assert by_model.loc["sasrec", "n_seeds"] == 2 and by_model.loc["bert4rec", "n_seeds"] == 1
    assert by_model.loc["sasrec", "anisotropy_mean"] == pytest.approx(sas["anisotropy"].mean())
    assert by_model.loc["sasrec", "hub_gini_std"] == pytest.approx(sas["hub_gini"].std(ddof=1))
    assert np.isnan(by_model.loc["bert4rec", "dims_90_std"])          # one seed: no spread
    assert "hub_max_k_occurrence_mean" not in by_model and "seed_mean" not in by_model
    lt_model = pd.read_csv(out / "longtail_by_model.csv")
    assert {"recall@10_tail_mean", "ndcg@10_all_std", "share_tail_in_top10_mean",
            "gini_recommendations_mean"} <= set(lt_model.columns)
    assert "users_head_mean" not in lt_model and list(lt_model["n_seeds"]) == [1, 1, 2]
    assert "± " in (out / "geometry_by_model.md").read_text()
    assert not list(out.glob("*top5*"))
    pairs = pd.read_csv(out / "geometry_pairs.csv")       # one pair from each folder
    assert sorted(zip(pairs["model_a"], pairs["model_b"], pairs["same_seed"])) == [
        ("bert4rec", "sasrec", True), ("sasrec", "sasrec", False)]
    pair_models = pd.read_csv(out / "geometry_pairs_by_model.csv")
    assert list(pair_models["n_pairs"]) == [1, 1]
    sas = pairs[pairs["model_a"] == pairs["model_b"]]
    assert pair_models.set_index("model_a").loc["sasrec", "linear_cka_mean"] == \
        pytest.approx(sas["linear_cka"].iloc[0])


def test_combine_bad_input_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "geometry_pairs.csv").write_text("run_a,run_b\nx,y\n")
    (tmp_path / "norun" / "longtail").mkdir(parents=True)
    (tmp_path / "norun" / "longtail" / "longtail.csv").write_text("model,dataset,seed\nm,d,1\n")
    cases = {tmp_path / "missing": "no such folder",
             tmp_path / "pairs": "no geometry.csv or longtail.csv under it",
             tmp_path / "norun": f"{tmp_path / 'norun' / 'longtail' / 'longtail.csv'}: "
                                 "no column 'run'"}
    for folder, message in cases.items():
        assert analysis_main(["combine", str(folder), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(folder) in err and message in err
    assert not (tmp_path / "o").exists()


def test_a_run_with_unreadable_weights_exits_2_naming_the_file(runs, tmp_path, capsys):
    import shutil
    run_dir = tmp_path / "cut"
    shutil.copytree(runs["sas1"], run_dir)
    weights = run_dir / "best_model.pt"
    weights.write_bytes(weights.read_bytes()[:500])
    for analysis in ("geometry", "longtail"):
        out = tmp_path / analysis
        assert analysis_main([analysis, str(runs["sas2"]), str(run_dir), "--out", str(out)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]    # after the data's progress
        assert last.startswith(f"error: {weights}: the best weights cannot be read"), last
        assert not out.exists()

    weights.unlink()       # a sweep brought back without its weights (results/study/*/sweep)
    for analysis in ("geometry", "longtail"):
        out = tmp_path / analysis
        assert analysis_main([analysis, str(run_dir), "--out", str(out)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == f"error: {weights}: no best weights (a sweep brought back without " \
            "its weights: analyse the run where it trained, or train it again)", last
        assert not out.exists()


def test_device_cuda_without_a_gpu_exits_2_saying_so(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for analysis in (["latency"], ["geometry", str(runs["sas1"])], ["longtail", str(runs["sas1"])]):
        out = tmp_path / analysis[0]
        assert analysis_main([*analysis, "--device", "cuda", "--out", str(out)]) == 2
        assert "--device cuda but no CUDA device is visible here" in capsys.readouterr().err
        assert not out.exists()


def test_an_out_that_is_a_file_exits_2_and_keeps_it(runs, tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("kept")
    for analysis in (["geometry", str(runs["sas1"])], ["longtail", str(runs["sas1"])],
                     ["combine", str(tmp_path)], ["latency"]):
        assert analysis_main([*analysis, "--out", str(afile)]) == 2
        assert f"error: --out {afile}: a file, not a folder" in capsys.readouterr().err
        assert afile.read_text() == "kept"


def test_latency_end_to_end_on_cpu(runs, tmp_path):
    assert analysis_main(["latency", "--out", str(tmp_path), "--models", "sasrec", "bert4rec",
                          "xlstm", "--lengths", "8:16:8", "--dim", "16", "--blocks", "1",
                          "--heads", "2", "--items", "50", "--batch", "4", "--warmup", "1",
                          "--repeats", "2", "--device", "cpu", "--threads", "1"]) == 0
    table = pd.read_csv(tmp_path / "latency.csv")
    assert len(table) == 6 and (table["status"] == "ok").all() and (table["latency_ms"] > 0).all()
    # the arithmetic from times is checked on known times in test_guards; here the real
    # timings are ordered as they must be
    assert (table["latency_ms_min"] <= table["latency_ms"]).all()
    assert (table["latency_ms"] <= table["latency_ms_max"]).all()
    fit = pd.read_csv(tmp_path / "latency_fit.csv")
    assert list(fit["model"]) == ["sasrec", "bert4rec", "xlstm"] and fit["alpha"].notna().all()
    assert (tmp_path / "latency.png").exists()
    # with runs: each run's model and sizes
    assert analysis_main(["latency", str(runs["sas1"]), "--out", str(tmp_path / "r"),
                          "--lengths", "8", "16", "--repeats", "1", "--device", "cpu"]) == 0
    table = pd.read_csv(tmp_path / "r" / "latency.csv")
    assert set(table["model"]) == {"sasrec"} and (table["dim"] == 16).all() and (table["n_items"] == 60).all()


def test_latency_tables_measured_apart_fit_as_one(tmp_path, capsys):
    """--tables: one model per device call, fitted together afterwards; the same fit as
    measuring them in one call, and a model measured twice is refused."""
    common = ["--lengths", "8:24:8", "--dim", "16", "--blocks", "1", "--heads", "2", "--items",
              "50", "--batch", "2", "--warmup", "0", "--repeats", "1", "--device", "cpu",
              "--threads", "1"]
    for m in ("sasrec", "gru4rec"):
        assert analysis_main(["latency", "--models", m, "--out", str(tmp_path / m), *common]) == 0
    out = tmp_path / "both"
    assert analysis_main(["latency", "--tables", str(tmp_path / "sasrec"),
                          str(tmp_path / "gru4rec" / "latency.csv"), "--out", str(out)]) == 0
    table = pd.read_csv(out / "latency.csv")
    assert list(table["model"].unique()) == ["sasrec", "gru4rec"] and len(table) == 6
    parts = pd.concat([pd.read_csv(tmp_path / m / "latency_fit.csv") for m in ("sasrec", "gru4rec")])
    fit = pd.read_csv(out / "latency_fit.csv")
    assert np.allclose(fit["alpha"], parts["alpha"]) and (out / "latency.png").exists()
    capsys.readouterr()
    assert analysis_main(["latency", "--tables", str(tmp_path / "sasrec"), str(out),
                          "--out", str(tmp_path / "twice")]) == 2
    assert "sasrec already measured in" in capsys.readouterr().err
    assert analysis_main(["latency", "--tables", str(tmp_path / "none"),
                          "--out", str(tmp_path / "twice")]) == 2
    assert not (tmp_path / "twice").exists()


def test_fit_alpha_recovers_a_power_law():
    from recsys_core.analysis.latency import fit_alpha
    lengths = np.array([64, 128, 256, 512, 1024])
    table = pd.DataFrame({"model": "m", "max_len": lengths, "status": "ok",
                          "latency_ms": 0.5 * lengths ** 1.26})
    fit = fit_alpha(table)
    assert fit["alpha"].item() == pytest.approx(1.26) and fit["r2"].item() == pytest.approx(1.0)
    assert fit["c_ms"].item() == pytest.approx(0.5)


def test_run_dirs_expands_a_sweep_to_its_completed_cells(tmp_path):
    cells = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    (tmp_path / "manifest.json").write_text(json.dumps({"cells": cells}))
    for cid, status in (("a", "COMPLETED"), ("b", "FAILED")):
        (tmp_path / "cells" / cid).mkdir(parents=True)
        (tmp_path / "cells" / cid / "result.json").write_text(json.dumps({"status": status}))
    assert run_dirs([tmp_path]) == [tmp_path / "cells" / "a"]
    with pytest.raises(FileNotFoundError, match="neither a run"):
        run_dirs([tmp_path / "cells" / "c"])


def test_a_file_given_as_a_run_exits_2_naming_it(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"      # a file where a run's or a sweep's folder goes
    grid.write_text("name: g\n")
    for analysis in ("geometry", "longtail"):
        assert analysis_main([analysis, str(grid), "--out", str(tmp_path / "a")]) == 2
        err = capsys.readouterr().err
        assert f"error: {grid}: neither a run (result.json) nor a sweep" in err, err
        assert "Traceback" not in err and not (tmp_path / "a").exists()


def test_fit_alpha_says_where_launch_bound_lengths_make_alpha_meaningless():
    """Batch 32: a flat floor (kernel launches) until the work catches up, then L^1.26; the
    fit over every length says little, the tail's recovers the exponent."""
    from recsys_core.analysis.latency import fit_alpha
    lengths = np.array([64, 128, 256, 384, 512, 768, 1024, 1536])
    table = pd.DataFrame({"model": ["flat"] * 8 + ["noise"] * 8, "max_len": [*lengths] * 2,
                          "status": "ok",
                          "latency_ms": [*np.maximum(5.0, 3e-3 * lengths ** 1.26),
                                         5, 7, 4, 6, 5, 7, 4, 6]})
    fit = fit_alpha(table).set_index("model")
    flat = fit.loc["flat"]
    assert flat["r2"] < 0.95 and flat["alpha"] < 1.0
    assert flat["alpha_tail"] == pytest.approx(1.26) and flat["r2_tail"] == pytest.approx(1.0)
    assert flat["tail_from_len"] == 768 and flat["verdict"].startswith("launch-bound below L=768")
    assert fit.loc["noise", "verdict"].startswith("no power law")
    assert np.isnan(fit.loc["noise", "alpha_tail"])          # never twice its floor
