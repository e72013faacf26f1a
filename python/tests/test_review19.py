"""Review, session 19 (review19py): the Python package red-teamed as a careless user
and as an attacker. Each test here failed against main when written (what it printed
is in the commit message and the branch's report) and is marked `xfail(strict=True)`,
so that CI stays green until the fix lands and then flags the marker for removal."""

from __future__ import annotations

import dataclasses
import errno
import os
import pathlib
import pickle
import sys
from typing import Any, Optional

import pytest

import statesafe


def _read_or_error(store: Any) -> Any:
    """What `store.get()` gives: the document, or the exception it raised."""
    try:
        return store.get()
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        return e


# --- update(fn): a function that changes the state in place and returns a value --------


def test_an_update_function_that_changed_the_state_in_place_keeps_it(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"grades": {"g100": {"vak": "Mat"}}})
    store.replace({"grades": {"g100": {"vak": "Mat"}}})
    # A careless but natural one-liner: add a grade unless it is there. The function
    # changes the state in place, and returns the grade (dict.setdefault's result).
    try:
        store.update(lambda s: s["grades"].setdefault("g101", {"vak": "Ned"}))
    except statesafe.UsageError:
        pass  # refusing the ambiguous return (nothing written) is a fix too
    doc = store.get()
    assert isinstance(doc, dict) and "g100" in doc.get("grades", {}), (
        f"the document was replaced by the function's return value: {doc!r}")


def test_an_update_function_returning_another_kind_is_refused(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 1})
    store.replace({"n": 1})
    with pytest.raises(statesafe.UsageError) as e:
        store.update(lambda s: s.get("n"))  # unchanged state, a value returned
    assert str(path) in str(e.value) and e.value.path == str(path)
    assert store.get() == {"n": 1} and store.generation == 1


def test_an_update_function_may_return_a_new_document(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 1})
    assert store.update(lambda s: {"n": s["n"] + 1}) == {"n": 2}
    assert store.update(lambda s: s) == {"n": 2}  # the same object: as None
    counter = statesafe.open(path.with_name("counter.json"), default=0)
    assert counter.update(lambda n: n + 1) == 1  # a scalar for a scalar
    assert counter.get() == 1


def test_a_file_a_pydantic_model_refuses_is_a_mismatch_naming_the_file(
        path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Balance(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        balance: int = 0

    path.write_text('{"balance": "lots"}')
    with pytest.raises(statesafe.Mismatch) as e:
        statesafe.open(path, model=Balance).get()
    assert str(path) in str(e.value) and isinstance(e.value.__cause__, ValueError)
    assert path.read_text() == '{"balance": "lots"}'


# --- errors that do not name the file ------------------------------------------------------


def test_a_refusal_by_validate_names_the_file(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"balance": 0},
                           validate=lambda s: "balance must not be negative"
                           if s["balance"] < 0 else None)
    with pytest.raises(statesafe.Invalid) as e:
        store.replace({"balance": -1})
    assert str(path) in str(e.value), str(e.value)


def test_a_refusal_by_the_schema_names_the_file(path: pathlib.Path) -> None:
    schema = {"type": "object", "properties": {"balance": {"type": "number", "minimum": 0}}}
    store = statesafe.open(path, default={"balance": 0}, schema=schema)
    with pytest.raises(statesafe.Invalid) as e:
        store.replace({"balance": -1})
    assert str(path) in str(e.value), str(e.value)


@dataclasses.dataclass
class _Balance:
    balance: float = 0.0


def test_a_file_the_model_refuses_is_an_error_naming_the_file(path: pathlib.Path) -> None:
    path.write_text('{"balance": 1, "surprise": true}')
    store = statesafe.open(path, model=_Balance)
    got = _read_or_error(store)
    assert isinstance(got, Exception), got
    assert str(path) in str(got), f"{type(got).__name__}: {got}"


def test_a_file_nested_too_deep_is_an_error_with_its_path(path: pathlib.Path) -> None:
    path.write_text("[" * 600 + "]" * 600)
    store = statesafe.open(path)
    with pytest.raises(statesafe.Error) as e:
        store.get()
    assert e.value.path == str(path), (type(e.value).__name__, e.value.kind, e.value.path)


def test_an_os_error_kind_keeps_its_errno_through_pickle(path: pathlib.Path) -> None:
    with pytest.raises(statesafe.NotFound) as e:
        statesafe.open(path).get()
    assert e.value.errno == errno.ENOENT and e.value.filename == str(path)
    again = pickle.loads(pickle.dumps(e.value))
    assert (again.errno, again.filename) == (errno.ENOENT, str(path)), (
        f"after pickle: errno {again.errno!r}, filename {again.filename!r}")


# --- numbers a valid file holds that the reader cannot serve ----------------------------


def _served_or_refused_naming_the_file(path: pathlib.Path, got: Any, exact: Any) -> None:
    if isinstance(got, BaseException):
        assert isinstance(got, statesafe.Error) and str(path) in str(got), (
            f"{type(got).__module__}.{type(got).__name__}: {got}")
    else:
        assert got == exact


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"),
                    reason="this Python has no int digit limit")
def test_an_int_beyond_pythons_digit_limit_is_served_or_refused_naming_the_file(
        path: pathlib.Path) -> None:
    big = 10 ** 5000
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        statesafe.open(path).create({"n": big})
    finally:
        sys.set_int_max_str_digits(limit)
    got = _read_or_error(statesafe.open(path))
    _served_or_refused_naming_the_file(path, got, {"n": big})


@pytest.mark.parametrize("number", ["1e9999999999999999999", "-1e-9999999999999999999"])
def test_an_exponent_beyond_decimals_range_is_refused_naming_the_file(
        path: pathlib.Path, number: str) -> None:
    path.write_text('{"x": %s}' % number)
    got = _read_or_error(statesafe.open(path))
    # No Python number holds it exactly: a clear refusal is the only right answer.
    assert isinstance(got, statesafe.Error) and str(path) in str(got), (
        f"{type(got).__module__}.{type(got).__name__}: {got!r}")
    assert path.read_text() == '{"x": %s}' % number


# --- typed documents ----------------------------------------------------------------------


@dataclasses.dataclass
class _Counted:
    n: int = 0
    seen: int = dataclasses.field(default=0, init=False)


def test_a_dataclass_with_an_init_false_field_reads_what_it_wrote(path: pathlib.Path) -> None:
    store = statesafe.open(path, model=_Counted, default=_Counted())
    with store.transaction() as state:
        state.n += 1
    assert store.get().n == 1


@dataclasses.dataclass
class _Item:
    a: int = 0


@dataclasses.dataclass
class _Items:
    items: Optional[list[_Item]] = None


def test_an_optional_list_of_dataclasses_is_built(path: pathlib.Path) -> None:
    path.write_text('{"items": [{"a": 1}]}')
    got = statesafe.open(path, model=_Items).get()
    assert got.items is not None and isinstance(got.items[0], _Item), got


# --- a document whose keys collide in JSON ------------------------------------------------


class _Key(str):
    """A str subclass whose instances are all distinct dict keys, whatever their text."""

    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other


def test_two_keys_with_one_text_are_refused_not_half_written(path: pathlib.Path) -> None:
    store = statesafe.open(path)
    try:
        store.create({_Key("a"): 1, _Key("a"): 2})
    except TypeError:
        written = None
    else:
        written = path.read_text()
    assert written is None and not path.exists(), (
        f"written as {written!r}, read back as {statesafe.open(path).get()!r}")


# --- a deleted state file -------------------------------------------------------------------


def test_a_deleted_state_file_is_not_silently_replaced_by_the_default(path: pathlib.Path) -> None:
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, default={"n": 0}, on_event=events.append)
    for _ in range(3):
        with store.transaction() as state:
            state["n"] += 1
    os.unlink(path)  # a cleanup, a careless `rm`, a sync tool
    got = _read_or_error(store)
    assert got != {"n": 0} or events, (
        "the default was served for a file whose generation 3 was committed, with no event")
    # lost19: refused with an exception of its own (not a FileNotFoundError, which a
    # caller might take for "start from the default"), naming the file, the last
    # generation and the way out; no transaction starts a new life either.
    assert isinstance(got, statesafe.Deleted) and not isinstance(got, FileNotFoundError), got
    assert got.path == str(path) and got.generation == 3 and got.kind == "deleted"
    assert str(path) in str(got) and "store.recover()" in str(got), str(got)
    assert got.newest_backup is not None and os.path.exists(got.newest_backup), got.newest_backup
    with pytest.raises(statesafe.Deleted):
        with store.transaction() as state:
            state["n"] += 1
    with pytest.raises(statesafe.Deleted):
        store.update(lambda s: {"n": s["n"] + 1})
    with pytest.raises(statesafe.Deleted):
        store.create({"n": 0})
    assert not path.exists()


def test_a_deleted_state_file_is_put_back_by_recover(path: pathlib.Path) -> None:
    events: list[dict[str, Any]] = []
    store = statesafe.open(path, default={"n": 0}, on_event=events.append)
    for _ in range(3):
        with store.transaction() as state:
            state["n"] += 1
    os.unlink(path)
    event = store.recover()
    assert event is not None and event["kind"] == "undeleted", event
    assert (event["known"], event["restored_from"], event["generation"]) == (3, 3, 4), event
    assert store.get() == {"n": 3} and store.generation == 4
    assert [e["kind"] for e in events] == ["undeleted"], events


def test_a_deleted_state_file_is_started_over_only_by_replace(path: pathlib.Path) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 7})
    os.unlink(path)
    assert store.replace({"n": 0}) == 2  # on purpose: generations go on
    assert store.get() == {"n": 0}



def test_a_number_a_pydantic_model_does_not_touch_keeps_its_value(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Balance(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        current_balance: float = 0.0
        peak_balance: float = 0.0

    path.write_text('{"current_balance": 0.10000000000000001, "peak_balance": 2.5}')
    store = statesafe.open(path, model=Balance)
    with store.transaction() as state:
        state.peak_balance = 3.5  # the program changes another field only
    assert '"current_balance": 0.10000000000000001' in path.read_text(), path.read_text()


def test_a_number_a_pydantic_model_changed_is_written_as_changed(path: pathlib.Path) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Balance(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        current_balance: float = 0.0
        history: list[float] = []

    path.write_text('{"current_balance": 0.10000000000000001, '
                    '"history": [0.30000000000000001, 0.20000000000000001]}')
    store = statesafe.open(path, model=Balance, layout="compact")
    with store.transaction() as state:
        state.current_balance = 0.25  # changed: written as the program set it
        state.history[1] = 0.5
    assert path.read_text().strip() == (
        '{"current_balance":0.25,"history":[0.30000000000000001,0.5]}'), path.read_text()
