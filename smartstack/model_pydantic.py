"""The pydantic side of ``smartstack.modelbase``: what validates a config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ConfigDict", "ConfigModel", "Field", "ValidationError", "field_validator"]
__all__ += ["model_validator"]


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are kept (and warned about), not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
