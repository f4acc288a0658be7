"""The pydantic-free model base (smartstack.model_plain): pydantic's API as the daemon uses it."""

from __future__ import annotations

import copy
import pickle
from typing import ClassVar

import pytest

from smartstack.model_plain import (
    ConfigDict,
    ConfigModel,
    Field,
    StaleModel,
    field_validator,
    model_validator,
)
from smartstack.modelbase import same_model


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


class Two(ConfigModel):
    model_config = ConfigDict(**ConfigModel.model_config, frozen=True)
    a: str = ""
    b: str = ""


class Tagged(ConfigModel):
    tags: list[str] = []  # a plain mutable default: pydantic copies it per instance


def test_equal_frozen_objects_hash_alike_whatever_the_keyword_order() -> None:
    one, two = Two(a="x", b="y"), Two(b="y", a="x")
    assert list(two.__dict__) == ["a", "b"]
    assert one == two and hash(one) == hash(two) and len({one, two}) == 1


def test_mutable_defaults_and_copies_are_not_shared() -> None:
    one, two = Tagged(), Tagged.model_construct()
    assert one.tags == [] and one.tags is not two.tags and one.tags is not Tagged().tags
    child = Child(name="a")
    copied = copy.copy(child)
    copied.port = 3
    assert child.port is None and "port" not in child.model_fields_set


def test_a_pickle_of_other_fields_is_refused_with_a_clear_error() -> None:
    state = Inner(a=2).__getstate__()
    assert pickle.loads(pickle.dumps(Inner(a=2))) == Inner(a=2)
    for values in ({"a": 1, "new": 2}, {}):
        with pytest.raises(StaleModel, match=r"new: new; gone: -|new: -; gone: a") as info:
            Inner.__new__(Inner).__setstate__(state | {"__dict__": values})
        assert "the code changed since it started" in str(info.value)  # (config_child: restart)


def test_same_model_compares_the_fields_given_too() -> None:
    assert Child(name="a") == Child(name="a", port=None)
    assert not same_model(Child(name="a"), Child(name="a", port=None))
    assert same_model(Child(name="a", port=None), Child(name="a", port=None))
    nested_given = Child(name="a", inner=Inner(a=1))
    assert nested_given == Child(name="a", inner=Inner())
    assert not same_model({"s": [nested_given]}, {"s": [Child(name="a", inner=Inner())]})
    assert same_model({"s": [nested_given]}, {"s": [Child(name="a", inner=Inner(a=1))]})
    assert not same_model(Child(name="a"), Child(name="b"))
