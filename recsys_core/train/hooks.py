"""Debug hooks: ways to make a run fail or slow down on purpose, for the tests of the failure
paths (crash and resume, NaN loss, catching a job mid-run). Not configuration: not in
TrainConfig nor its hash, hidden from --help. A grid may set them like parameters (one failing
cell in a test sweep); they travel in cell.json's `debug_hooks`."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from recsys_core.train.config import ConfigError


class DebugHooks(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    inject_fault: str = ""       # "raise@E" raises in epoch E, "nan@E" makes epoch E's loss NaN
    epoch_sleep_s: float = 0.0   # sleep after every epoch

    @field_validator("inject_fault")
    @classmethod
    def _fault(cls, value: str) -> str:
        if value and not re.fullmatch(r"(raise|nan)@\d+", value):
            raise ValueError(f"inject_fault={value!r}; valid: raise@EPOCH, nan@EPOCH")
        return value

    @classmethod
    def from_dict(cls, values: dict, source: str) -> "DebugHooks":
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            raise ConfigError(f"{source}: {first['loc'][0]}={first['input']!r}: "
                              f"{first['msg'].removeprefix('Value error, ')}") from None

    def fault(self, epoch: int) -> str | None:
        """"raise" or "nan" if a fault is to be injected in this epoch."""
        kind, _, at = self.inject_fault.partition("@")
        return kind if kind and int(at) == epoch else None


HOOK_KEYS = tuple(DebugHooks.model_fields)
