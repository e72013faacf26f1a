"""Values are exactly the JSON types; anything else is a TypeError naming its path,
raised before anything is written."""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import pathlib
import threading
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statesafe


@pytest.mark.parametrize("bad, pointer, words", [
    ({"when": datetime.datetime(2026, 1, 8)}, "/when", "datetime.datetime"),
    ({"tags": {"a", "b"}}, "/tags", "set"),
    ({"pair": (1, 2)}, "/pair", "tuple"),
    ({"x": float("nan")}, "/x", "nan"),
    ({"x": [0, float("inf")]}, "/x/1", "inf"),
    ({"grades": {1: "a"}}, "/grades", "key 1 of type int"),
    ({"a": {"b/c": [{"~d": decimal.Decimal("NaN")}]}}, "/a/b~1c/0/~0d", "Decimal NaN"),
    ({"x": decimal.Decimal("-Infinity")}, "/x", "Decimal -Infinity"),
    ({"x": decimal.Decimal("sNaN")}, "/x", "Decimal sNaN"),
    ({"f": print}, "/f", "builtin_function_or_method"),
    (b"bytes", "/", "bytes"),
])
def test_non_json_values_name_their_path(path: pathlib.Path, bad: Any, pointer: str,
                                         words: str) -> None:
    store = statesafe.open(path, default={"n": 0})
    store.replace({"n": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError) as e:
        store.replace(bad)
    assert f"`{pointer}`" in str(e.value) and words in str(e.value)
    assert e.value.pointer == pointer  # type: ignore[attr-defined]
    assert "nothing was written" in str(e.value) and "hint: " in str(e.value)
    with pytest.raises(TypeError):
        with store.transaction() as state:
            state["bad"] = bad
    with pytest.raises(TypeError):
        store.update(lambda s: bad)
    assert path.read_bytes() == before
    assert store.generation == 1
    statesafe.open(path, lock_timeout=0).replace({"n": 2})  # no lock left behind


def test_a_default_must_be_json(path: pathlib.Path) -> None:
    with pytest.raises(TypeError, match="/since"):
        statesafe.open(path, default={"since": datetime.date.today()})


def test_types_that_are_json_subclasses(path: pathlib.Path) -> None:
    class Color(enum.IntEnum):
        RED = 1

    store = statesafe.open(path)
    store.replace(OrderedDict([("b", Color.RED), ("a", True), ("c", None)]))
    assert store.get() == {"b": 1, "a": True, "c": None}
    assert list(store.get()) == ["b", "a", "c"], "key order is kept"
    assert type(store.get()["a"]) is bool


BIG = [2**64, -(2**63) - 1, 10**40, -(10**40), 2**63 - 1, -(2**63), 2**64 - 1]


def test_integers_keep_their_value(path: pathlib.Path) -> None:
    store = statesafe.open(path)
    store.replace([2**63 - 1, -(2**63), 2**64 - 1, 0, -1])
    assert store.get() == [2**63 - 1, -(2**63), 2**64 - 1, 0, -1]
    if statesafe.BIG_INTS:
        store.replace(BIG)
        assert store.get() == BIG
        assert json.loads(path.read_text()) == BIG
    else:
        # This build's serde_json keeps 64 bits: a bigger int is refused, never rounded.
        with pytest.raises(TypeError, match="beyond 64 bits") as e:
            store.replace({"big": [1, 2**64]})
        assert e.value.pointer == "/big/1"  # type: ignore[attr-defined]
        # A big number written by another program is read without losing more than
        # JSON's own float: never silently truncated to a wrong integer.
        path.write_text('{"big": 100000000000000000000}')
        got = statesafe.open(path).get()["big"]
        assert got == 1e20


def test_floats_round_trip_exactly(path: pathlib.Path) -> None:
    values = [0.1, 1e-300, 1.7976931348623157e308, -0.0, 5e-324, 1 / 3]
    store = statesafe.open(path)
    store.replace(values)
    got = store.get()
    assert got == values
    assert math.copysign(1, got[3]) == -1


def test_unicode(path: pathlib.Path) -> None:
    doc = {"naïve ☃": "𝄞 \u0000 \"quoted\" \\ / \n", "": ""}
    store = statesafe.open(path)
    store.replace(doc)
    assert store.get() == doc
    with pytest.raises(TypeError, match="surrogate"):
        store.replace({"x": "\ud800"})


def test_deep_nesting_is_refused_not_a_crash(path: pathlib.Path) -> None:
    doc: Any = []
    for _ in range(600):
        doc = [doc]
    with pytest.raises(TypeError, match="nested more than"):
        statesafe.open(path).replace(doc)


def _nested(levels: int) -> str:
    # `levels` arrays one inside the other, the innermost holding 1.
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize("levels", [129, 300, 511])
def test_a_document_as_deep_as_the_library_allows_can_be_updated(
        path: pathlib.Path, levels: int) -> None:
    # `levels` inside the top-level object. Red16: the Python package refused
    # documents nested more than 128 levels on write, while the library (and the
    # CLI, Node and Rust) hold up to 512 and Python reads them: a Python program
    # could read a state another tool wrote but not update it at all, even leaving
    # the deep part alone (TypeError, nothing written).
    path.write_text('{"n": 0, "deep": ' + _nested(levels) + "}")
    store = statesafe.open(path)
    assert store.get()["n"] == 0

    def bump(doc: Any) -> None:
        doc["n"] += 1

    store.update(bump)
    assert store.get()["n"] == 1
    assert json.loads(path.read_text())["deep"] == json.loads(_nested(levels))
    # And written whole from Python objects, at that depth (511 + 1 = the limit), on
    # a thread with a small stack (2 MiB, what the library is sized for).
    errors: list[BaseException] = []

    def replace() -> None:
        try:
            store.replace([json.loads(_nested(levels))])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    old_size = threading.stack_size(2 << 20)
    try:
        worker = threading.Thread(target=replace)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(old_size)
    assert errors == []
    assert path.read_text().count("[") == levels + 1


json_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
if statesafe.BIG_INTS:
    json_ints = st.integers()
json_values = st.recursive(
    st.none() | st.booleans() | json_ints
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=json_values)
def test_round_trip_of_arbitrary_json(state_dir: pathlib.Path, doc: Any) -> None:
    store = statesafe.open(state_dir / "rt.json", durability="none", history=0, backups=0)
    store.replace(doc)
    got = store.get()
    assert got == doc
    assert json.dumps(got, sort_keys=True) == json.dumps(doc, sort_keys=True)
    # What is on disk is what Python's own json module reads back.
    assert json.loads((state_dir / "rt.json").read_text()) == doc


# Number texts another program may write: every JSON spelling, from 0 to far beyond a
# double's range and precision.
number_texts = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    st.from_regex(r"0|[1-9][0-9]{0,24}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,24}", fullmatch=True)),
    st.one_of(st.just(""), st.builds(lambda e, s, n: f"{e}{s}{n}", st.sampled_from("eE"),
                                     st.sampled_from(["", "+", "-"]),
                                     st.integers(0, 450))),
)


def exactly(text: str) -> decimal.Decimal:
    """A JSON number's exact value."""
    return decimal.Decimal(text)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=number_texts)
def test_an_untouched_number_of_any_spelling_keeps_its_value(state_dir: pathlib.Path,
                                                             written: str) -> None:
    path = state_dir / "n.json"
    path.write_text(f'{{"id": {written}, "n": 0}}\n')
    store = statesafe.open(path, durability="none", history=0, backups=0)
    # What the program is served is the file's number: an int, a float that is that
    # number (its repr denotes it), or a Decimal of it.
    served = store.get()["id"]
    if isinstance(served, float):
        assert exactly(repr(served)) == exactly(written), f"{written} served as {served!r}"
        assert any(c in written for c in ".eE"), "an integer literal is an int"
    else:
        assert isinstance(served, (int, decimal.Decimal)), type(served)
        assert exactly(str(served)) == exactly(written), f"{written} served as {served!r}"
    with store.transaction() as state:
        state["n"] = 1
    got = json.loads(path.read_text(), parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    assert got == {"id": exactly(written), "n": 1}, path.read_text()


def test_numbers_no_float_holds_are_decimals(path: pathlib.Path) -> None:
    path.write_text('{"a": 0.1, "b": 1e400, "c": 9007199254740993.0, "d": 1e-400, '
                    '"e": 0.10000000000000001, "f": 12345678901234567890e0, "g": 2.5e-3}\n')
    got = statesafe.open(path).get()
    assert got == {"a": 0.1, "b": decimal.Decimal("1e400"),
                   "c": decimal.Decimal("9007199254740993.0"), "d": decimal.Decimal("1e-400"),
                   "e": decimal.Decimal("0.10000000000000001"),
                   "f": decimal.Decimal("12345678901234567890"), "g": 0.0025}
    assert [type(v) for v in got.values()] == [float, decimal.Decimal, decimal.Decimal,
                                               decimal.Decimal, decimal.Decimal,
                                               decimal.Decimal, float]


def test_decimals_are_written_exactly(path: pathlib.Path) -> None:
    class Shown(decimal.Decimal):
        def __str__(self) -> str:
            return "a display format"

    store = statesafe.open(path, default={})
    doc = {"a": decimal.Decimal("0.10000000000000001"), "b": decimal.Decimal("1E+400"),
           "c": decimal.Decimal("-2.50"), "d": decimal.Decimal("7"),
           "e": Shown("1e-400"), "f": [decimal.Decimal("0.1")]}
    store.replace(doc)
    text = path.read_text()
    for written in ['"a": 0.10000000000000001', '"b": 1e400', '"c": -2.50', '"d": 7',
                    '"e": 1e-400', "0.1\n"]:
        assert written in text, text
    # Read back: each a number of the same value; a Decimal a float or an int holds
    # exactly comes back as that float or int.
    assert store.get() == {"a": decimal.Decimal("0.10000000000000001"),
                           "b": decimal.Decimal("1e400"), "c": -2.5, "d": 7,
                           "e": decimal.Decimal("1e-400"), "f": [0.1]}
    # And through a transaction (whose private copy must equal what parsing gives).
    with store.transaction() as state:
        state["g"] = decimal.Decimal("3.14159265358979323846")
    with store.transaction() as state:
        assert state["g"] == decimal.Decimal("3.14159265358979323846")
        assert type(state["c"]) is float and type(state["f"][0]) is float
    assert statesafe.open(path).get()["g"] == decimal.Decimal("3.14159265358979323846")


def test_an_int_subclass_is_written_with_its_value(path: pathlib.Path) -> None:
    class Shown(int):
        def __str__(self) -> str:
            return "1"

        def __repr__(self) -> str:
            return "2"

    store = statesafe.open(path, default={})
    doc = {"small": Shown(5), "big": Shown(2**80), "neg": Shown(-(2**80))}
    if statesafe.BIG_INTS:
        store.replace(doc)
        assert json.loads(path.read_text()) == {"small": 5, "big": 2**80, "neg": -(2**80)}
    else:
        with pytest.raises(TypeError, match="1208925819614629174706176, beyond 64 bits"):
            store.replace(doc)


# The three shapes in which the Node package once wrote a number no double holds as its
# nearest double (node17): a copy with the original left in place, a document load()
# served passed to replace(), and equal floats of other texts trading places. Python
# serves such a number as a Decimal, an object that carries its exact value wherever
# the program puts it, so each is written with its text, sync and async alike.
def _three_shapes() -> list[tuple[str, Any, str]]:
    def copy(s: Any) -> None:
        s["y"] = s["x"]

    def reverse(s: Any) -> None:
        s["a"].reverse()

    def swap(s: Any) -> None:
        s["a"][0], s["a"][1] = s["a"][1], s["a"][0]

    return [
        ('{"x": 1e-400}', copy, '{"x": 1e-400, "y": 1e-400}'),
        ('{"x": 0.10000000000000001}', copy,
         '{"x": 0.10000000000000001, "y": 0.10000000000000001}'),
        ('{"a": [0.10000000000000001, 0.1]}', reverse, '{"a": [0.1, 0.10000000000000001]}'),
        ('{"a": [1e-400, 0]}', swap, '{"a": [0, 1e-400]}'),
    ]


def _as_texts(text: str) -> Any:
    # Each number as the Decimal of its exact value: 0.1 and 0.10000000000000001 differ.
    return json.loads(text, parse_float=decimal.Decimal, parse_int=decimal.Decimal)


def test_numbers_no_float_holds_keep_their_text_when_copied_moved_or_replaced(
        state_dir: pathlib.Path) -> None:
    import asyncio

    import statesafe.aio

    for i, (body, change, expected) in enumerate(_three_shapes()):
        for way in ["update", "transaction", "replace", "async update", "async replace"]:
            path = state_dir / f"{i}-{way.replace(' ', '-')}.json"
            path.write_text(body)
            if way == "update":
                statesafe.open(path).update(change)
            elif way == "transaction":
                with statesafe.open(path).transaction() as state:
                    change(state)
            elif way == "replace":
                store = statesafe.open(path)
                doc = store.load().value
                change(doc)
                store.replace(doc)
            else:
                async def run() -> None:
                    async with statesafe.aio.open(path) as store:
                        if way == "async update":
                            await store.update(change)
                        else:
                            doc = (await store.load()).value
                            change(doc)
                            await store.replace(doc)
                asyncio.run(run())
            assert _as_texts(path.read_text()) == _as_texts(expected), (way, body)
