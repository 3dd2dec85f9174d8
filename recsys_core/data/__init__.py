"""Datasets: raw files (mirror, cache, download), the Parquet table, preprocessing, the split.

Attributes are imported on first use, so `from recsys_core.data.names import DATASET_NAMES`
(the launcher's grid validation) does not pay for pandas and torch."""
from recsys_core.data.names import DATASET_NAMES

_LAZY = {"SequenceData": "dataset", "load_dataset": "dataset", "DataError": "fetch",
         "LeaveOneOut": "split"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f"recsys_core.data.{_LAZY[name]}"), name)
    raise AttributeError(name)


__all__ = ["DATASET_NAMES", "DataError", "LeaveOneOut", "SequenceData", "load_dataset"]
