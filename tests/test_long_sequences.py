"""benchmarks/long_sequences.py on the CPU at tiny sizes: a row per (model, max_len) in the
CSV and the Markdown (which names the device), and a row that runs out of memory recorded as
OOM while the others go on."""
import pandas as pd
import torch

from benchmarks import long_sequences

TINY = ["--device", "cpu", "--models", "mamba4rec", "sasrec", "--lengths", "8", "16",
        "--users", "8", "--items", "40"]


def test_smoke_run_writes_a_row_per_model_and_length(tmp_path):
    assert long_sequences.main(TINY + ["--out-dir", str(tmp_path)]) == 0
    rows = pd.read_csv(tmp_path / "long_sequences.csv")
    assert list(zip(rows["model"], rows["max_len"])) == \
        [("mamba4rec", 8), ("sasrec", 8), ("mamba4rec", 16), ("sasrec", 16)]
    assert (rows["status"] == "ok").all() and (rows["epoch_time_s"] > 0).all()
    assert rows["mamba_backend"].fillna("").tolist() == ["mambapy", "", "mambapy", ""]
    assert "# Long sequences: training epoch time and peak memory (cpu" in \
        (tmp_path / "long_sequences.md").read_text()


def test_a_row_out_of_memory_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    real = long_sequences.one_row

    def one_row(args, model, max_len, *rest):
        if (model, max_len) == ("mamba4rec", 16):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(args, model, max_len, *rest)

    monkeypatch.setattr(long_sequences, "one_row", one_row)
    long_sequences.main(TINY + ["--out-dir", str(tmp_path)])
    rows = pd.read_csv(tmp_path / "long_sequences.csv")
    assert rows["status"].tolist() == ["ok", "ok", "OOM", "ok"]
    assert "| OOM " in (tmp_path / "long_sequences.md").read_text()
