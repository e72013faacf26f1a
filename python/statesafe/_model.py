"""Typed documents: a dataclass, or any class with pydantic v2's ``model_validate`` and
``model_dump``, converted on load and on commit."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, Callable, Optional, Union


def adapters(model: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(to_model, from_model)`` for ``model``: document -> instance, instance -> document."""
    if hasattr(model, "model_validate") and hasattr(model, "model_dump"):
        def dump(instance: Any) -> Any:
            return instance.model_dump(mode="json")
        return model.model_validate, dump
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        def load(document: Any) -> Any:
            return _build(model, document, "")
        return load, dataclasses.asdict
    raise TypeError(
        f"model must be a dataclass or a class with model_validate and model_dump (pydantic v2), "
        f"not {model!r}")


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
