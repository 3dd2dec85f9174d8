"""Grid files: expansion (counts, order, ids), validation messages, the shipped grids, speed."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from launcher.grid import GridError, Resources, expand, load_grid

REPO = Path(__file__).resolve().parents[1]

EXAMPLE = """\
name: paper
fixed: {epochs: 200, patience: 3}
grid:                                   # cartesian product
  model: [xlstm, sasrec, bert4rec, gru4rec, lstm]
  dataset: [ml-100k, ml-1m]
  max_len: [32, 64, 128]
  seed: [42, 123, 2023]
zip:                                    # lists advanced together, crossed with the grid
  - {embedding_dim: [64, 128], num_blocks: [1, 2]}
overrides:                              # applied to every cell that matches `when`
  - when: {dataset: ml-1m}
    set: {batch_size: 256}
  - when: {dataset: ml-20m}
    set: {resources: {gpus: 4, time: "24:00:00"}}
exclude:
  - {model: bert4rec, max_len: 128}
resources: {partition: gpu, gpus: 1, cpus: 8, mem: 64G, time: "04:00:00"}
"""
EXAMPLE_20M = EXAMPLE.replace("dataset: [ml-100k, ml-1m]", "dataset: [ml-100k, ml-1m, ml-20m]")

MINIMAL = """\
fixed: {epochs: 2}
grid:
  model: [sasrec, pop]
  dataset: [synthetic]
  seed: [1, 2]
"""


def load_cells(path: Path) -> list:
    return expand(load_grid(path))


def write(tmp_path: Path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def grid_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(GridError) as e:
        load_cells(path)
    message = str(e.value)
    assert message.startswith(f"{path}: "), message      # every message names the file
    return message


def test_the_example_as_written_fails_on_its_ml20m_override(tmp_path):
    # The example's datasets are ml-100k and ml-1m, so `when: {dataset: ml-20m}` matches nothing.
    msg = grid_error(tmp_path, EXAMPLE)
    assert "overrides[1].when" in msg and "ml-20m" in msg and "matches no cell" in msg


def test_the_example_with_ml20m_expands_to_252_cells(tmp_path):
    # grid: 5 models × 3 datasets × 3 max_len × 3 seeds = 135; × 2 zip rows = 270;
    # exclude bert4rec with max_len 128: 1 × 3 × 1 × 3 × 2 = 18 cells → 270 - 18 = 252.
    cells = load_cells(write(tmp_path, EXAMPLE_20M))
    assert len(cells) == 252
    assert not any(c.params["model"] == "bert4rec" and c.params["max_len"] == 128 for c in cells)
    # order: grid axes in file order (last axis fastest), zip innermost
    assert [c.name for c in cells[:3]] == [
        "xlstm-ml-100k-L32-s42-embedding_dim=64-num_blocks=1",
        "xlstm-ml-100k-L32-s42-embedding_dim=128-num_blocks=2",
        "xlstm-ml-100k-L32-s123-embedding_dim=64-num_blocks=1"]
    first = cells[0]
    assert first.params == {"epochs": 200, "patience": 3, "model": "xlstm", "dataset": "ml-100k",
                            "max_len": 32, "seed": 42, "embedding_dim": 64, "num_blocks": 1}
    assert first.resources == Resources(partition="gpu", gpus=1, cpus=8, mem="64G",
                                        time="04:00:00")
    for c in cells:
        assert (c.params.get("batch_size") == 256) == (c.params["dataset"] == "ml-1m")
        big = c.params["dataset"] == "ml-20m"
        assert (c.resources.gpus, c.resources.time) == ((4, "24:00:00") if big else
                                                        (1, "04:00:00"))
        assert c.resources.partition == "gpu"                  # merged, not replaced
    assert len({c.id for c in cells}) == 252
    assert all(len(c.id) == 12 and int(c.id, 16) >= 0 for c in cells)


def test_ids_are_stable_and_depend_on_params_and_resources(tmp_path):
    ids = [c.id for c in load_cells(write(tmp_path, EXAMPLE_20M, "a.yaml"))]
    assert ids == [c.id for c in load_cells(write(tmp_path, EXAMPLE_20M, "b.yaml"))]
    reordered = EXAMPLE_20M.replace(
        "fixed: {epochs: 200, patience: 3}", "fixed: {patience: 3, epochs: 200}").replace(
        "resources: {partition: gpu, gpus: 1, cpus: 8, mem: 64G, time: \"04:00:00\"}",
        "resources: {time: \"04:00:00\", mem: 64G, cpus: 8, gpus: 1, partition: gpu}")
    assert reordered != EXAMPLE_20M
    assert ids == [c.id for c in load_cells(write(tmp_path, reordered, "c.yaml"))]
    # equal values written differently are the same cell: 200 vs 2_00, 1e-3 vs 0.001, 64G vs 64g
    a = load_cells(write(tmp_path, MINIMAL + "  lr: [1e-3]\nresources: {mem: 64G}\n", "d.yaml"))
    b = load_cells(write(tmp_path, MINIMAL + "  lr: [0.001]\nresources: {mem: 64g}\n", "e.yaml"))
    assert [c.id for c in a] == [c.id for c in b]
    changed = EXAMPLE_20M.replace("epochs: 200", "epochs: 201")
    assert not set(ids) & {c.id for c in load_cells(write(tmp_path, changed, "f.yaml"))}
    more_cpus = EXAMPLE_20M.replace("cpus: 8", "cpus: 16")
    assert not set(ids) & {c.id for c in load_cells(write(tmp_path, more_cpus, "g.yaml"))}


def test_when_lists_mean_any_of_and_later_overrides_win(tmp_path):
    cells = load_cells(write(tmp_path, MINIMAL + """\
overrides:
  - when: {seed: [1, 2]}
    set: {lr: 0.01, resources: {slurm_extra: {mail-type: END}}}
  - when: {model: pop, seed: 2}
    set: {lr: 0.5, resources: {slurm_extra: {exclusive: true}}}
"""))
    lrs = {(c.params["model"], c.params["seed"]): c.params["lr"] for c in cells}
    assert lrs == {("sasrec", 1): 0.01, ("sasrec", 2): 0.01, ("pop", 1): 0.01, ("pop", 2): 0.5}
    assert cells[-1].resources.slurm_extra == {"mail-type": "END", "exclusive": True}


def test_resources_syntax_profile_and_unquoted_times(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    write(profiles, "resources: {partition: a, gpus: 2, mem: 8G, time: 30}\n", "site.yaml")
    # `time: 4:00:00` unquoted would be the integer 14400 in plain YAML 1.1; here it is 4 hours
    grid = load_grid(write(tmp_path, MINIMAL + "profile: site\nresources: {time: 4:00:00}\n"),
                     profiles_dir=profiles)
    res = expand(grid)[0].resources
    assert (res.partition, res.gpus, res.mem, res.time) == ("a", 2, "8G", "4:00:00")
    assert res.time_minutes == 240
    assert Resources(time="1-12").time_minutes == 36 * 60
    assert Resources(time="2-00:00:01").time_minutes == 2 * 24 * 60 + 1
    assert Resources(time="30:00").time_minutes == 30                  # MM:SS
    write(profiles, "resources: {partition: a, gpus: many}\n", "bad.yaml")
    with pytest.raises(GridError, match=r"profiles/bad.yaml: resources.gpus: 'many'"):
        load_grid(write(tmp_path, MINIMAL + "profile: bad\n"), profiles_dir=profiles)


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    cells = load_cells(write(tmp_path, MINIMAL + """\
overrides:
  - when: {seed: 1}
    set: &big {lr: 0.01, batch_size: 512}
  - when: {seed: 2}
    set: {<<: *big, lr: 0.02}
"""))
    assert [(c.params["lr"], c.params["batch_size"]) for c in cells] == [
        (0.01, 512), (0.02, 512), (0.01, 512), (0.02, 512)]


def test_cells_hand_a_full_train_config_to_the_trainer(tmp_path):
    """The grid builds each cell's TrainConfig once; the sweep writes it whole to cell.json
    and the job reads it back as it is (its folder is the run's `out`)."""
    from jobs.train_cell import read_cell
    from launcher.sweep import Sweep
    path = write(tmp_path, MINIMAL + "overrides: [{when: {seed: 1}, set: {inject_fault: raise@2,"
                                     " resources: {gpus: 2}}}]\n")
    cells = load_cells(path)
    cell = cells[0]
    cfg = cell.config
    assert (cfg.model, cfg.epochs, cfg.run_id, cfg.wandb_group) == ("sasrec", 2, cell.id, "g")
    assert cfg.num_processes == 2 and cell.hooks == {"inject_fault": "raise@2"}
    sweep = Sweep.create(tmp_path / "s", path, "g", cells, "local")
    read, hooks = read_cell(sweep.cell_dir(cell.id))
    assert read == cfg.model_copy(update={"out": str(sweep.cell_dir(cell.id))})
    assert hooks.inject_fault == "raise@2" and read.hash() == cfg.hash()
    assert [c.config for c in sweep.cells()] == [c.config for c in cells]   # from the manifest


VALID_PARAMS = "valid: model, dataset, max_len"
VALID_RESOURCES = "valid: partition, account, qos, gpus, cpus, mem, time, constraint, nodes"
VALID_MODELS = "valid: bert4rec, gru4rec, lstm, mamba4rec, pop, sasmamba, sasrec, xlstm"

ERRORS = {
    "unknown top-level key": (
        MINIMAL + "grdi: {}\n", ["grdi: unknown top-level key", "valid: name, description"]),
    "unknown parameter": (
        MINIMAL.replace("epochs", "epoch"), ["fixed.epoch: unknown parameter", VALID_PARAMS]),
    "launcher key": (
        MINIMAL + "  out: [a]\n", ["grid.out: out is set by the launcher", VALID_PARAMS]),
    "unknown model": (
        MINIMAL.replace("[sasrec, pop]", "[sasrec, pop, transformer]"),
        ["grid.model[2]: unknown model 'transformer'", VALID_MODELS]),
    "unknown dataset in when": (
        MINIMAL + "overrides:\n  - {when: {dataset: [synthetic, ml-2m]}, set: {lr: 0.1}}\n",
        ["overrides[0].when.dataset[1]: unknown dataset 'ml-2m'", "valid: amazon-beauty"]),
    "wrong type": (
        MINIMAL.replace("epochs: 2", "epochs: ten"), ["epochs='ten' should be of type int"]),
    "null": (MINIMAL.replace("epochs: 2", "epochs: null"), ["fixed.epochs: null is not"]),
    "bad choice": (
        MINIMAL + "  optimizer: [adam, sgd]\n",
        ["grid.optimizer[1]: optimizer='sgd'", "valid: adam, adamw"]),
    "bad range": (MINIMAL + "  max_len: [0]\n", ["grid.max_len[0]: max_len must be >= 1"]),
    "dropout of one": (MINIMAL + "  dropout: [0.1, 1.0]\n",
                       ["grid.dropout[1]: dropout must be in [0, 1), got 1.0"]),
    "zero lr": (MINIMAL + "overrides:\n  - {when: {seed: 1}, set: {lr: 0}}\n",
                ["overrides[0].set.lr", "lr must be > 0, got 0"]),
    "nan lr": (MINIMAL + "  lr: [.nan]\n", ["grid.lr[0]: lr must be a finite number, got nan"]),
    "negative weight decay": (MINIMAL.replace("epochs: 2", "epochs: 2, weight_decay: -0.1"),
                              ["fixed.weight_decay: weight_decay must be >= 0, got -0.1"]),
    "plateau factor of one": (MINIMAL.replace("epochs: 2", "epochs: 2, scheduler: plateau, gamma: 1.0"),
                              ["gamma=1.0 with scheduler='plateau'", "must be < 1"]),
    "negative seed": (MINIMAL.replace("[1, 2]", "[1, -2]"),
                      ["grid.seed[1]: seed must be in [0, 2**32)", "got -2"]),
    "cut-off zero": (MINIMAL.replace("epochs: 2", "epochs: 2, ks: [0, 10]"),
                     ["fixed.ks: ks must be one or more cut-offs >= 1, got [0, 10]"]),
    "synthetic key misspelt": (  # was SyntheticSpec's TypeError traceback in each job
        MINIMAL.replace("epochs: 2", "epochs: 2, synthetic: {n_userz: 50}"),
        ["synthetic: unknown key(s) n_userz; valid: n_users, n_items"]),
    "synthetic shape that cannot be made": (
        MINIMAL.replace("epochs: 2", "epochs: 2, synthetic: {n_items: 4}"),
        ["synthetic: n_clusters=10: expected 1 to n_items (4)"]),
    "synthetic options for a real file": (
        MINIMAL.replace("epochs: 2", "epochs: 2, synthetic: {n_users: 50}").replace(
            "[synthetic]", "[synthetic, ml-100k]"),
        ["synthetic options with dataset='ml-100k': only synthetic, synthetic-ml-1m"]),
    "synthetic probabilities": (
        MINIMAL.replace("epochs: 2", "epochs: 2, synthetic: {p_follow: 0.9, p_drift: 0.2}"),
        ["synthetic: p_follow=0.9, p_drift=0.2: expected probabilities"]),
    "negative patience": (MINIMAL + "  patience: [-1]\n", ["grid.patience[0]: patience must be >= 0"]),
    "heads that do not split the width": (
        MINIMAL.replace("epochs: 2", "epochs: 2, embedding_dim: 30, num_heads: 4"),
        ["cell sasrec-synthetic-L50-s1: sasrec: embedding_dim must be divisible by num_heads"]),
    "unknown resource": (
        MINIMAL + "resources: {gpu: 1}\n", ["resources.gpu: unknown resource", VALID_RESOURCES]),
    "negative gpus": (MINIMAL + "resources: {gpus: -1}\n", ["resources.gpus: -1", ">= 0"]),
    "zero nodes": (MINIMAL + "resources: {nodes: 0}\n", ["resources.nodes: 0", ">= 1"]),
    "float cpus": (MINIMAL + "resources: {cpus: 2.5}\n", ["resources.cpus: 2.5", "integer"]),
    "bad time": (MINIMAL + "resources: {time: 4h}\n", ["resources.time: '4h'", "HH:MM:SS"]),
    "bad minutes": (MINIMAL + "resources: {time: '1:75'}\n", ["resources.time", "D-HH:MM:SS"]),
    "bad mem": (MINIMAL + "resources: {mem: 64 GB}\n", ["resources.mem: '64 GB'", "valid: 64G"]),
    "unknown override resource": (
        MINIMAL + "overrides:\n  - {when: {seed: 1}, set: {resources: {time_limit: 5}}}\n",
        ["overrides[0].set.resources.time_limit: unknown resource", VALID_RESOURCES]),
    "scalar axis": (
        MINIMAL.replace("[synthetic]", "synthetic"), ["grid.dataset: must be a list", "fixed"]),
    "empty axis": (MINIMAL.replace("[1, 2]", "[]"), ["grid.seed: empty list"]),
    "repeated axis value": (
        MINIMAL.replace("[1, 2]", "[1, 2, 1]"),
        ["cells: sasrec-synthetic-L50-s1 and sasrec-synthetic-L50-s1 resolve to the same",
         "a value is repeated in a grid or zip list"]),
    "unequal zip": (
        MINIMAL + "zip:\n  - {embedding_dim: [64, 128], num_blocks: [1, 2, 3]}\n",
        ["zip[0]: lists of unequal length: embedding_dim has 2, num_blocks has 3"]),
    "override matching nothing": (
        MINIMAL + "overrides:\n  - {when: {seed: 1}, set: {lr: 0.1}}\n"
                  "  - {when: {seed: 3}, set: {lr: 0.1}}\n",
        ["overrides[1].when: {\"seed\": [3]} matches no cell"]),
    "exclude matching nothing": (
        MINIMAL + "exclude:\n  - {model: pop}\n  - {model: pop, seed: 7}\n",
        ["exclude[1]:", "matches no cell"]),
    "exclude everything": (MINIMAL + "exclude:\n  - {dataset: synthetic}\n", ["every cell"]),
    "when on a key no cell sets": (
        MINIMAL + "overrides:\n  - {when: {lr: 0.001}, set: {lr: 0.1}}\n",
        ["overrides[0].when.lr: can only test keys set by fixed, grid or zip",
         "valid: epochs, model, dataset, seed"]),
    "duplicate cells": (
        MINIMAL + "overrides:\n  - {when: {seed: 2}, set: {seed: 1}}\n",
        ["cells: sasrec-synthetic-L50-s1 and sasrec-synthetic-L50-s1 resolve to the same",
         "overrides make seed=1 vs 2 equal"]),
    "repeated zip rows": (
        MINIMAL + "zip:\n  - {embedding_dim: [64, 64], num_blocks: [1, 1]}\n",
        ["resolve to the same parameters"]),
    "grid and fixed": (MINIMAL + "  epochs: [1, 2]\n", ["grid.epochs: also set in fixed.epochs"]),
    "zip and grid": (
        MINIMAL + "zip:\n  - {seed: [1, 2], lr: [0.1, 0.2]}\n", ["zip[0].seed: also set in grid"]),
    "no model": (MINIMAL.replace("model", "max_len").replace("sasrec, pop", "5, 6"),
                 ["fixed: model is not set"]),
    "duplicate yaml key": (MINIMAL + "  seed: [3]\n", ["duplicate key 'seed'", "g.yaml\", line 6"]),
    "unknown profile": (MINIMAL + "profile: h100-typo\n", ["profile: no profile file",
                                                           "valid: a100"]),
    "bad name": (MINIMAL + "name: my grid\n", ["name: 'my grid'"]),
    "override keys": (
        MINIMAL + "overrides:\n  - {if: {seed: 1}, set: {lr: 0.1}}\n",
        ["overrides[0].if: unknown key in an override", "valid: when, set"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_file_the_field_and_the_choices(tmp_path, case):
    text, expected = ERRORS[case]
    msg = grid_error(tmp_path, text)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_shipped_grids_load():
    quick = load_cells(REPO / "launcher" / "grids" / "quickstart.yaml")
    assert len(quick) == 4
    assert {(c.params["model"], c.params["dataset"]) for c in quick} == {
        ("sasrec", "synthetic"), ("gru4rec", "synthetic"), ("pop", "synthetic"),
        ("pop", "ml-100k")}
    assert all(c.resources.gpus == 0 and c.params["epochs"] <= 3 for c in quick)

    paper = load_cells(REPO / "launcher" / "grids" / "paper.yaml")
    assert len(paper) == 6 * 4 * 3 * 3
    pop = [c for c in paper if c.params["model"] == "pop"]
    assert len(pop) == 36 and all(c.resources.gpus == 0 for c in pop)     # pop trains nothing
    shape = {c.params["dataset"]: (c.params["embedding_dim"], c.params["num_heads"],
                                   c.params["num_blocks"], c.params["batch_size"] *
                                   c.resources.gpus, c.params["optimizer"], c.params["lr"],
                                   c.params["scheduler"], c.resources.gpus)
             for c in paper if c.params["model"] != "pop"}
    assert shape == {"ml-100k": (64, 2, 1, 128, "adam", 1e-3, "step", 1),
                     "ml-1m": (128, 2, 2, 128, "adamw", 3e-4, "plateau", 1),
                     "ml-10m": (128, 2, 2, 1024, "adam", 1e-3, "none", 1),
                     "ml-20m": (256, 4, 3, 1024, "adamw", 1e-4, "onecycle", 4)}
    assert all(c.params["epochs"] == 200 and c.params["patience"] == 3 for c in paper)
    assert all(c.resources.constraint == "a100" for c in paper)          # from the profile


def test_ten_thousand_cells_expand_fast(tmp_path):
    path = write(tmp_path, """\
fixed: {epochs: 50, patience: 3}
grid:
  model: [xlstm, sasrec, bert4rec, gru4rec, lstm]
  dataset: [ml-100k, ml-1m, ml-10m, ml-20m]
  max_len: [16, 32, 64, 128, 256]
  seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  lr: [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4, 5.0e-4, 6.0e-4, 7.0e-4, 8.0e-4, 9.0e-4, 1.0e-3]
overrides:
  - {when: {dataset: ml-1m}, set: {batch_size: 256}}
  - {when: {dataset: [ml-10m, ml-20m]}, set: {batch_size: 1024, resources: {mem: 128G}}}
  - {when: {dataset: ml-20m}, set: {resources: {gpus: 4}}}
resources: {gpus: 1, cpus: 8, mem: 64G, time: "04:00:00"}
""")
    start = time.perf_counter()
    cells = expand(load_grid(path))
    seconds = time.perf_counter() - start
    print(f"\n10,000 cells: load + validate + expand in {seconds:.3f} s")
    assert len(cells) == 10_000 and len({c.id for c in cells}) == 10_000
    assert seconds < 5.0


def test_every_shipped_grid_expands_and_the_study_covers_every_real_dataset():
    grids = {p.stem: load_cells(p) for p in (REPO / "launcher" / "grids").glob("*.yaml")}
    assert all(grids.values())
    study = grids["study"]
    datasets = {c.params["dataset"] for c in study}
    assert datasets == {"ml-100k", "ml-1m-bert4rec", "amazon-beauty", "beauty-s3rec",
                        "sports-s3rec", "toys-s3rec", "yelp-s3rec", "video-sasrec"}
    from recsys_core.models import MODEL_NAMES
    assert {c.params["model"] for c in study} == set(MODEL_NAMES)
    assert len(study) == len(datasets) * len(MODEL_NAMES) * 3
    s3rec = [c.config for c in study if c.params["dataset"] == "toys-s3rec"
             and c.params["model"] == "sasrec"]
    assert {(c.embedding_dim, c.num_blocks, c.num_heads, c.dropout, c.max_len) for c in s3rec} \
        == {(64, 1, 1, 0.2, 50)}                  # the eSASRec settings of SOURCES.md
    ml1m = [c.config for c in study if c.params["dataset"] == "ml-1m-bert4rec"]
    assert {c.max_len for c in ml1m} == {200}
    # best epochs of 335-390 at a cap of 400 (within 10%): BERT4Rec on ML-1M runs to 800
    assert {c.epochs for c in ml1m if c.model == "bert4rec"} == {800}
    assert all(c.config.patience >= 10 for c in study if c.config.model != "pop")
