"""Session 21 (fix21py): silent losses of typed documents.

2. A pydantic model with the default `extra="ignore"` dropped the file's undeclared
   fields at the next commit; now refused on load with Mismatch naming the fields.
   (A dataclass already refused them: checked here at depth too.)
3. `replace(dict)` on a model store raised a bare `asdict()` error (or pydantic's
   AttributeError); now a plain document the model accepts is written through the
   model, anything else is a UsageError naming the file."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional

import pytest

import statesafe


# ---------------------------------------------------------------- 2. dropped fields


def test_pydantic_extra_ignore_is_refused_on_load(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")

    class Item(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        name: str

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        balance: int = 0
        items: list[Item] = []

    document = {"balance": 1, "notes": "keep me", "items": [{"name": "a", "color": "red"}]}
    path.write_text(json.dumps(document))
    store = statesafe.open(path, model=Account)
    for call in (store.get, store.transaction, lambda: store.update(lambda a: None)):
        with pytest.raises(statesafe.Mismatch) as e:
            call()
        text = str(e.value)
        assert str(path) in text and "`/notes`" in text and "`/items/0/color`" in text, text
        assert 'extra="allow"' in text and "declare them" in text, text
    assert json.loads(path.read_text()) == document

    class Keeps(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        model_config = pydantic.ConfigDict(extra="allow")
        balance: int = 0

    path.write_text(json.dumps({"balance": 1, "notes": "keep me"}))
    keeping = statesafe.open(path, model=Keeps)
    with keeping.transaction() as k:
        k.balance += 1
    assert json.loads(path.read_text()) == {"balance": 2, "notes": "keep me"}

    class Forbids(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        model_config = pydantic.ConfigDict(extra="forbid")
        balance: int = 0

    with pytest.raises(statesafe.Mismatch) as e:
        statesafe.open(path, model=Forbids).get()
    assert str(path) in str(e.value) and "notes" in str(e.value)
    assert json.loads(path.read_text()) == {"balance": 2, "notes": "keep me"}


@dataclasses.dataclass
class Pos:
    size: float = 0.0


@dataclasses.dataclass
class State:
    balance: float = 0.0
    pos: Optional[Pos] = None


def test_dataclass_with_unknown_nested_fields_is_refused(path: pathlib.Path) -> None:
    document = {"pos": {"size": 1.0, "color": "red"}}
    path.write_text(json.dumps(document))
    with pytest.raises(statesafe.Mismatch, match="color") as e:
        statesafe.open(path, model=State).get()
    assert str(path) in str(e.value)
    assert json.loads(path.read_text()) == document


# ---------------------------------------------------------------- 3. plain documents


def test_replace_with_a_plain_dict_on_a_model_store(path: pathlib.Path) -> None:
    store = statesafe.open(path, model=State, default=State())
    # A dict the model accepts is written through the model, as the next load reads it.
    store.replace({"balance": 2.5, "pos": {"size": 1.0}})
    assert store.get() == State(2.5, Pos(1.0))
    store.update(lambda s: {"balance": 3.0})
    assert store.get() == State(3.0, None)
    # One it refuses, or another type, is a UsageError naming the file; nothing written.
    for bad, why in (({"balance": 1.0, "surprise": 1}, "surprise"),
                     ([1, 2], "refuses"), (Pos(1.0), "not a State")):
        with pytest.raises(statesafe.UsageError) as e:
            store.replace(bad)
        assert str(path) in str(e.value) and why in str(e.value), str(e.value)
        assert "nothing was written" in str(e.value)
    with pytest.raises(statesafe.UsageError, match="not a State"):
        store.create(Pos(1.0))
    assert store.get() == State(3.0, None) and store.load().generation == 2


def test_replace_with_a_plain_dict_on_a_pydantic_store(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        balance: int = 0

    store = statesafe.open(path, model=Account, default=Account())
    store.replace({"balance": "7"})
    assert json.loads(path.read_text()) == {"balance": 7}
    for bad in ({"balance": "x"}, {"balance": 1, "extra": 2}, 5):
        with pytest.raises(statesafe.UsageError) as e:
            store.replace(bad)
        assert str(path) in str(e.value) and "nothing was written" in str(e.value)
    assert store.get() == Account(balance=7)
