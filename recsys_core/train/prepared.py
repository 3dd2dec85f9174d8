"""Prepared data kept across the runs of one process (a worker running many cells): each
dataset loaded and preprocessed once, its leave-one-out tensors on each device once, and the
training windows once per (max_len, train_windows).

Everything kept here is only read by a run (indexing, never written in place), and a run
seeds its RNGs after taking it (setup.build_run), so a run given prepared data trains exactly
as one that loaded its own (tests/test_worker.py checks it bit for bit). The newest `keep`
datasets stay; a worker's cells come grouped by dataset, so one or two are in use at a time.
"""
from __future__ import annotations

import json
from collections import OrderedDict

import torch

from recsys_core.data import LeaveOneOut, load_dataset


def dataset_key(cfg) -> str:
    """What the loaded data depends on: the dataset, its options, where it is read from."""
    return json.dumps([cfg.dataset, cfg.min_user_interactions, cfg.data_mirror,
                       cfg.synthetic], sort_keys=True)


class Prepared:
    def __init__(self, keep: int = 3):
        self.keep = keep
        self._data: OrderedDict[str, dict] = OrderedDict()   # key → {"data", splits, windows}
        self.hits = 0           # runs that found their dataset here (for the result record)

    def _entry(self, cfg) -> dict:
        key = dataset_key(cfg)
        entry = self._data.get(key)
        if entry is None:
            data = load_dataset(cfg.dataset, min_user_interactions=cfg.min_user_interactions,
                                mirror=cfg.data_mirror, synthetic=cfg.synthetic or None)
            entry = self._data[key] = {"data": data, "splits": {}, "windows": {}}
            while len(self._data) > self.keep:
                self._data.popitem(last=False)
        else:
            self.hits += 1
        self._data.move_to_end(key)
        return entry

    def data(self, cfg, device: torch.device):
        """(SequenceData, LeaveOneOut on `device`) of the run's dataset."""
        entry = self._entry(cfg)
        split = entry["splits"].get(str(device))
        if split is None:
            split = entry["splits"][str(device)] = LeaveOneOut.from_data(entry["data"], device)
        return entry["data"], split

    def windows(self, cfg, split: LeaveOneOut) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's training windows for the run's max_len and window mode."""
        entry = self._data[dataset_key(cfg)]
        key = (str(split.items.device), cfg.max_len, cfg.train_windows)
        if key not in entry["windows"]:
            entry["windows"][key] = split.train_windows(cfg.max_len, cfg.train_windows)
        return entry["windows"][key]
