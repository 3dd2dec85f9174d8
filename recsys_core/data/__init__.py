"""Datasets: raw files (mirror, cache, download), the Parquet table, preprocessing, the split."""
from recsys_core.data.dataset import DATASET_NAMES, SequenceData, load_dataset
from recsys_core.data.fetch import DataError
from recsys_core.data.split import LeaveOneOut

__all__ = ["DATASET_NAMES", "DataError", "LeaveOneOut", "SequenceData", "load_dataset"]
