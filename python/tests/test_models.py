"""Typed documents: dataclasses and pydantic v2 models (real or duck-typed)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import Any, Optional

import pytest

import statesafe


@dataclasses.dataclass
class Position:
    market: str
    size: float


@dataclasses.dataclass
class TradingState:
    current_balance: float = 0.0
    peak_balance: float = 0.0
    positions: list[Position] = dataclasses.field(default_factory=list)
    by_market: dict[str, Position] = dataclasses.field(default_factory=dict)
    last: Optional[Position] = None


def test_dataclass_round_trip(path: pathlib.Path) -> None:
    store = statesafe.open(path, model=TradingState, default=TradingState())
    state = store.get()
    assert isinstance(state, TradingState) and state.current_balance == 0.0
    with store.transaction() as s:
        s.current_balance = 200.5
        s.positions.append(Position("BTC-UP", 3.0))
        s.by_market["ETH"] = Position("ETH", 1.5)
        s.last = Position("SOL", 2.0)
    assert json.loads(path.read_text())["positions"] == [{"market": "BTC-UP", "size": 3.0}]
    got = store.get()
    assert got == TradingState(200.5, 0.0, [Position("BTC-UP", 3.0)],
                               {"ETH": Position("ETH", 1.5)}, Position("SOL", 2.0))
    assert isinstance(got.positions[0], Position) and isinstance(got.last, Position)
    store.update(lambda s: dataclasses.replace(s, peak_balance=s.current_balance))
    assert store.load().value.peak_balance == 200.5
    store.replace(TradingState(current_balance=1.0))
    assert store.get().current_balance == 1.0


def test_dataclass_refuses_unknown_fields_without_touching_the_file(path: pathlib.Path) -> None:
    path.write_text('{"current_balance": 1, "surprise": true}')
    store = statesafe.open(path, model=TradingState)
    with pytest.raises(statesafe.Mismatch, match="surprise") as e:
        store.get()
    assert str(path) in str(e.value) and isinstance(e.value.__cause__, TypeError)
    assert json.loads(path.read_text()) == {"current_balance": 1, "surprise": True}


def test_validate_sees_the_model(path: pathlib.Path) -> None:
    def rule(s: TradingState) -> Optional[str]:
        return "balance must not be negative" if s.current_balance < 0 else None

    store = statesafe.open(path, model=TradingState, default=TradingState(), validate=rule)
    with pytest.raises(statesafe.Invalid, match="negative"):
        with store.transaction() as s:
            s.current_balance = -5
    assert not path.exists()


class DuckModel:
    """Anything with pydantic v2's two methods is a model."""

    def __init__(self, n: int) -> None:
        self.n = n

    @classmethod
    def model_validate(cls, data: Any) -> "DuckModel":
        return cls(data["n"])

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        assert mode == "json"
        return {"n": self.n}


def test_duck_typed_pydantic_model(path: pathlib.Path) -> None:
    store = statesafe.open(path, model=DuckModel, default=DuckModel(0))
    with store.transaction() as m:
        m.n += 41
    store.update(lambda m: setattr(m, "n", m.n + 1))
    assert store.get().n == 42
    assert json.loads(path.read_text()) == {"n": 42}


def test_real_pydantic_model(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic", reason="pydantic not installed: NOT TESTED")
    import datetime

    class Account(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        balance: int = 0
        opened: datetime.date = datetime.date(2026, 1, 8)

    store = statesafe.open(path, model=Account, default=Account())
    with store.transaction() as a:
        a.balance += 10
    raw = json.loads(path.read_text())
    assert raw == {"balance": 10, "opened": "2026-01-08"}
    assert store.get() == Account(balance=10)
    # A pydantic validation error is a refusal (statesafe.Invalid), nothing written.
    store2 = statesafe.open(path, model=Account,
                            validate=lambda a: Account.model_validate(
                                {**a.model_dump(), "balance": "x" * a.balance}))
    with pytest.raises(statesafe.Invalid):
        store2.replace(Account(balance=3))
    assert json.loads(path.read_text()) == raw


def test_not_a_model() -> None:
    with pytest.raises(TypeError, match="dataclass"):
        statesafe.open("x.json", model=int)


@dataclasses.dataclass
class WithPipeUnion:
    last: "Position | None" = None


def test_pipe_union_fields(path: pathlib.Path) -> None:
    if sys.version_info < (3, 10):
        pytest.skip("`X | None` needs Python 3.10")
    store = statesafe.open(path, model=WithPipeUnion, default=WithPipeUnion())
    store.replace(WithPipeUnion(Position("BTC", 1.0)))
    assert store.get().last == Position("BTC", 1.0)
