"""Model configuration: SQL header comments and the YAML sidecar, as frozen pydantic classes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Frozen(BaseModel):
    """Immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Materialized(StrEnum):
    """How a model's result is kept."""

    VIEW = "view"
    TABLE = "table"
    INCREMENTAL = "incremental"


class Strategy(StrEnum):
    """How an incremental model writes new rows."""

    MERGE = "merge"
    APPEND = "append"
    DELETE_INSERT = "delete+insert"


class IncrementalConfig(Frozen):
    """``incremental: {strategy, watermark}``."""

    strategy: Strategy = Strategy.MERGE
    watermark: str | None = None


class Severity(StrEnum):
    """``error`` blocks publish; ``warn`` reports."""

    ERROR = "error"
    WARN = "warn"


BUILTIN_TESTS = (
    "not_null",
    "unique",
    "positive",
    "non_negative",
    "accepted_values",
    "relationships",
    "range",
    "expression",
)


class ColumnTest(Frozen):
    """One built-in test on a column: ``not_null`` or ``{accepted_values: {values: [...]}}``."""

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = Severity.ERROR

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"kind": value}
        if isinstance(value, dict) and "kind" not in value and len(value) == 1:
            kind, args = next(iter(value.items()))
            args = dict(args or {})
            severity = args.pop("severity", Severity.ERROR)
            return {"kind": kind, "args": args, "severity": severity}
        return value

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        if kind not in BUILTIN_TESTS:
            raise ValueError(f"unknown test `{kind}`; built-in tests: {', '.join(BUILTIN_TESTS)}")
        return kind


class ColumnConfig(Frozen):
    """``columns: [{name, type, description, tests}]``."""

    name: str
    type: str | None = None
    description: str = ""
    tests: list[ColumnTest] = Field(default_factory=list)


class CustomTest(Frozen):
    """A SQL test whose first value must equal ``expect``."""

    name: str
    sql: str
    expect: int = 0
    severity: Severity = Severity.ERROR


class UnitTest(Frozen):
    """Mock input rows for the model's refs and the rows it must return."""

    name: str
    given: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    expect: list[dict[str, Any]]
    vars: dict[str, Any] = Field(default_factory=dict)
    incremental: bool = False


class Duration(Frozen):
    """``{hours: 6}``-style durations."""

    days: float = 0
    hours: float = 0
    minutes: float = 0

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return self.days * 86400 + self.hours * 3600 + self.minutes * 60


class Freshness(Frozen):
    """``freshness: {warn_after, error_after}``: how old the last publish may be."""

    warn_after: Duration | None = None
    error_after: Duration | None = None


class ModelConfig(Frozen):
    """Everything a model may declare (header comments and sidecar YAML share these keys)."""

    name: str | None = None
    description: str = ""
    owner: str = ""
    materialized: Materialized = Materialized.TABLE
    unique_key: list[str] = Field(default_factory=list)
    incremental: IncrementalConfig = IncrementalConfig()
    partition_by: list[str] = Field(default_factory=list)
    schedule: str | None = None
    tags: list[str] = Field(default_factory=list)
    columns: list[ColumnConfig] = Field(default_factory=list)
    tests: list[CustomTest] = Field(default_factory=list)
    unit_tests: list[UnitTest] = Field(default_factory=list)
    freshness: Freshness | None = None
    schema_drift: Literal["evolve", "fail"] = "evolve"
    vars: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("unique_key", "partition_by", "tags", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in _split_top_level(value) if part.strip()]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        needs_key = self.materialized == Materialized.INCREMENTAL and self.incremental.strategy != Strategy.APPEND
        if needs_key and not self.unique_key:
            raise ValueError(
                f"an incremental model with strategy {self.incremental.strategy.value} needs a unique_key "
                "(or use strategy: append)"
            )
        if self.materialized == Materialized.VIEW and self.partition_by:
            raise ValueError("a view cannot be partitioned; use materialized: table")
        return self


def _split_top_level(text: str) -> list[str]:
    """Split ``"day(ts), bucket(4, id)"`` on commas outside parentheses."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts
