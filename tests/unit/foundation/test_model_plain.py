"""The pydantic-free model base (smartstack.model_plain): pydantic's API as the daemon uses it."""

from __future__ import annotations

from typing import ClassVar

import pytest

from smartstack.model_plain import ConfigDict, ConfigModel, Field, field_validator, model_validator


class Inner(ConfigModel):
    a: int = 1


class Base(ConfigModel):
    name: str
    items: list[str] = Field(default_factory=list)
    inner: Inner = Field(default_factory=Inner)
    kind: ClassVar[str] = "base"

    @field_validator("name")
    @classmethod
    def _check(cls, value: str) -> str:
        raise AssertionError("never called")

    @property
    def shout(self) -> str:
        return self.name.upper()


class Child(Base):
    global_: list[str] = Field(default_factory=list, alias="global")
    port: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _after(self) -> Child:
        raise AssertionError("never called")


class Frozen(ConfigModel):
    model_config = ConfigDict(**ConfigModel.model_config, frozen=True)
    x: str | None = None


def test_fields_come_from_annotations_over_the_mro_without_classvars_or_validators() -> None:
    assert list(Child.model_fields) == ["name", "items", "inner", "global_", "port"]
    assert not hasattr(Child, "_check") and not hasattr(Child, "_after")
    assert Child.kind == "base"
    child = Child(name="web", **{"global": ["a"]}, unknown=3)
    assert child.shout == "WEB" and child.global_ == ["a"] and child.port is None
    assert child.model_fields_set == {"name", "global_"}
    assert child.model_extra == {"unknown": 3} and child.unknown == 3
    assert Child(name="x").items is not Child(name="x").items  # a factory per instance
    with pytest.raises(TypeError, match="'name' is required"):
        Child()


def test_equality_hash_and_repr_as_pydantic() -> None:
    one, two = Child(name="a", port=1), Child(name="a", port=1)
    assert one == two and one != Child(name="a", port=2) and one != Base(name="a")
    assert Child(name="a", port=1) == Child.model_construct(_fields_set=(), name="a", port=1)
    with pytest.raises(TypeError):
        hash(one)
    assert hash(Frozen(x="a")) == hash(Frozen(x="a")) and {Frozen(x="a"), Frozen(x="a")}
    with pytest.raises(TypeError, match="frozen"):
        Frozen().x = "b"
    assert repr(Inner(a=2)) == "Inner(a=2)"


def test_setting_a_field_marks_it_set() -> None:
    child = Child(name="a")
    child.port = 5
    assert "port" in child.model_fields_set and child.port == 5
    with pytest.raises(AttributeError):
        child.nope = 1


def test_model_copy_and_model_dump() -> None:
    child = Child(name="a", extra_key={"k": 1})
    copy = child.model_copy(update={"port": 9})
    assert copy.port == 9 and child.port is None and copy.inner is child.inner
    assert copy.model_fields_set == {"name", "port"}
    dumped = child.model_dump(by_alias=True, exclude_unset=True)
    assert dumped == {"name": "a", "extra_key": {"k": 1}}
    full = child.model_dump(exclude={"items"})
    assert full["inner"] == {"a": 1} and "items" not in full and full["global_"] == []
