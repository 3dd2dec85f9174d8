"""Debug hooks: ways to make a run fail or slow down on purpose, for the tests of the failure
paths (crash and resume, NaN loss, running out of GPU memory, catching a job mid-run). Not configuration: not in
TrainConfig nor its hash, hidden from --help. A grid may set them like parameters (one failing
cell in a test sweep); they travel in cell.json's `debug_hooks`."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from recsys_core.train.config import ConfigError


class DebugHooks(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # "raise@E" raises in epoch E, "nan@E" makes epoch E's loss NaN, "oom@E" raises CUDA's
    # out-of-memory error in epoch E of a run that did not resume from a checkpoint (as a
    # crowded GPU does: run again from epoch E-1's checkpoint, the cell goes on; oom@1 always)
    inject_fault: str = ""
    epoch_sleep_s: float = 0.0   # sleep after every epoch

    @field_validator("inject_fault")
    @classmethod
    def _fault(cls, value: str) -> str:
        if value and not re.fullmatch(r"(raise|nan|oom)@\d+", value):
            raise ValueError(f"inject_fault={value!r}; valid: raise@EPOCH, nan@EPOCH, "
                             "oom@EPOCH")
        return value

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "DebugHooks":
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"{source}: {first['loc'][0]}={first['input']!r}: "
                              f"{first['msg'].removeprefix('Value error, ')}") from None

    def fault(self, epoch: int, resumed: bool = False) -> str | None:
        """"raise", "nan" or "oom" if a fault is to be injected in this epoch of a run
        (`resumed`: one that continued from a checkpoint)."""
        kind, _, at = self.inject_fault.partition("@")
        if kind == "oom" and resumed:
            return None
        return kind if kind and int(at) == epoch else None


HOOK_KEYS = tuple(DebugHooks.model_fields)
