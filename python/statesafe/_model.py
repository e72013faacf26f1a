"""Typed documents: a dataclass, or any class with pydantic v2's ``model_validate`` and
``model_dump``, converted on load and on commit."""

from __future__ import annotations

import dataclasses
import decimal
import sys
import types
import typing
import weakref
from typing import Any, Callable, Iterator, Optional, Union


def adapters(model: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(to_model, from_model)`` for ``model``: document -> instance, instance -> document."""
    if hasattr(model, "model_validate") and hasattr(model, "model_dump"):
        return _pydantic_adapters(model)
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        def load(document: Any) -> Any:
            return _build(model, document, "")
        return load, dataclasses.asdict
    raise TypeError(
        f"model must be a dataclass or a class with model_validate and model_dump (pydantic v2), "
        f"not {model!r}")


def _pydantic_adapters(model: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A pydantic model coerces a number the file holds as a ``Decimal`` (one no float
    holds exactly, such as ``0.10000000000000001``) into a ``float`` field, and
    ``model_dump`` would write the float: the number would change although the program
    never touched it. So, per instance loaded, the numbers the model changed are
    remembered (where, what the model made of it, the file's ``Decimal``), and the
    dump writes the file's number back wherever the instance still holds what the
    model made of it. A number the program changed is written as it is."""
    kept: dict[int, dict[tuple[Any, ...], tuple[Any, decimal.Decimal]]] = {}

    def load(document: Any) -> Any:
        instance = model.model_validate(document)
        found = list(_decimals(document, ()))
        if not found:
            return instance
        dumped = instance.model_dump(mode="json")
        changed = {}
        for where, original in found:
            made = _at(dumped, where)
            if _is_number(made) and (not isinstance(made, decimal.Decimal)
                                     or made != original):
                if decimal.Decimal(made) != original:
                    changed[where] = (made, original)
        if changed:
            try:
                weakref.finalize(instance, kept.pop, id(instance), None)
            except TypeError:
                pointer = "/" + "/".join(str(k) for k in next(iter(changed)))
                raise TypeError(
                    f"the model {model.__name__} turns the number at `{pointer}` into "
                    f"{next(iter(changed.values()))[0]!r} and cannot be tracked (no weak "
                    f"references), so the next commit would change it; nothing was "
                    f"changed (declare the field as decimal.Decimal)") from None
            kept[id(instance)] = changed
        return instance

    def dump(instance: Any) -> Any:
        out = instance.model_dump(mode="json")
        for where, (made, original) in kept.get(id(instance), {}).items():
            now = _at(out, where)
            if type(now) is type(made) and now == made:
                _set(out, where, original)
        return out

    return load, dump


_ABSENT: Any = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _decimals(value: Any, where: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...],
                                                                   decimal.Decimal]]:
    """Where the plain document holds a ``Decimal``, and the ``Decimal``."""
    if isinstance(value, decimal.Decimal):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _decimals(v, (*where, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _decimals(v, (*where, i))


def _at(value: Any, where: tuple[Any, ...]) -> Any:
    for k in where:
        if isinstance(value, dict) and isinstance(k, str) and k in value:
            value = value[k]
        elif isinstance(value, list) and isinstance(k, int) and k < len(value):
            value = value[k]
        else:
            return _ABSENT
    return value


def _set(value: Any, where: tuple[Any, ...], new: Any) -> None:
    for k in where[:-1]:
        value = value[k]
    value[where[-1]] = new


# `Optional[X]` and, from Python 3.10, `X | None`.
_UNIONS = (Union, getattr(types, "UnionType", Union))


def _build(tp: Any, value: Any, where: str) -> Any:
    """``value`` (plain JSON) as ``tp``: nested dataclasses, and lists, dicts and
    Optionals of them, are built; everything else is passed as it is."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"the document at `{where or '/'}` should be an object for "
                            f"{tp.__name__}, not {type(value).__name__}")
        hints = typing.get_type_hints(tp, vars(sys.modules.get(tp.__module__, typing)))
        fields = dataclasses.fields(tp)
        names = {f.name for f in fields}
        unknown = sorted(set(value) - names)
        if unknown:
            raise TypeError(f"the document at `{where or '/'}` has fields that {tp.__name__} "
                            f"does not know: {', '.join(unknown)}; nothing was changed "
                            f"(add them to the dataclass, or remove them from the file)")
        built = {k: _build(hints.get(k, Any), v, f"{where}/{k}") for k, v in value.items()}
        # `init=False` fields are not __init__'s arguments, but dataclasses.asdict writes
        # them: set after __init__ (as a frozen dataclass's own __init__ does), so that
        # the store reads what it wrote.
        later = {f.name for f in fields if not f.init}
        instance = tp(**{k: v for k, v in built.items() if k not in later})
        for k in later & set(built):
            object.__setattr__(instance, k, built[k])
        return instance
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list and args and isinstance(value, list):
        return [_build(args[0], v, f"{where}/{i}") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _build(args[1], v, f"{where}/{k}") for k, v in value.items()}
    if origin in _UNIONS and value is not None:
        # `Optional[X]`: built as X, whatever X is (a dataclass, a list of them...).
        # Another union: as its first dataclass member, if the value is an object.
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1:
            return _build(members[0], value, where)
        for arg in members:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _build(arg, value, where)
    return value


def default_document(default: Any, from_model: Optional[Callable[[Any], Any]]) -> Any:
    """A default given as a model instance, as its document."""
    if from_model is not None and not isinstance(default, (dict, list, str, int, float, bool,
                                                         type(None))):
        return from_model(default)
    return default
