"""Typed documents: a dataclass, or any class with pydantic v2's ``model_validate`` and
``model_dump``, converted on load and on commit."""

from __future__ import annotations

import dataclasses
import decimal
import sys
import types
import typing
import weakref
from typing import Any, Callable, Optional, Union


class NotTheModel(TypeError):
    """A document given to write (``replace``, ``create``, ``update``'s return, a
    transaction's ``commit(state)``) that is neither an instance of the store's model
    nor a plain document the model accepts. The native store makes it a
    ``statesafe.UsageError`` naming the file (``_statesafe_hint`` is its hint)."""

    _statesafe_usage = True

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self._statesafe_hint = hint


class FieldsDropped(TypeError):
    """A document holding fields the model would not write back: refused on load (the
    native store makes it a ``statesafe.Mismatch`` naming the file, with this hint)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self._statesafe_hint = hint


_PLAIN = (dict, list, str, int, float, bool, decimal.Decimal, type(None))


def _accepting_plain(model: Any, load: Callable[[Any], Any],
                     dump: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``dump`` for an instance of ``model``; a plain document (a dict, as a migration
    script writes) is first read through the model, exactly as the next load would
    read it, so what is written is what the model accepts; anything else is refused."""
    name = getattr(model, "__name__", repr(model))

    def from_model(value: Any) -> Any:
        if isinstance(value, model):
            return dump(value)
        if not isinstance(value, _PLAIN):
            raise NotTheModel(
                f"the document to write is a {type(value).__name__}, not a {name} (the "
                f"store's model); nothing was written",
                f"pass a {name} instance, or a plain document (a dict) that {name} "
                f"accepts")
        try:
            instance = load(value)
        except Exception as e:  # noqa: BLE001 - the model's refusal, as the cause
            raise NotTheModel(
                f"the document to write is a plain {type(value).__name__} that {name} (the "
                f"store's model) refuses ({type(e).__name__}: {e}); nothing was written",
                f"pass a {name} instance, or a plain document {name} accepts (it is "
                f"read through the model, as the next load would read it)") from e
        return dump(instance)

    return from_model


def adapters(model: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(to_model, from_model)`` for ``model``: document -> instance, instance -> document."""
    if hasattr(model, "model_validate") and hasattr(model, "model_dump"):
        load, dump = _pydantic_adapters(model)
        return load, (_accepting_plain(model, load, dump) if isinstance(model, type)
                      else dump)
    if dataclasses.is_dataclass(model) and isinstance(model, type):
        def load(document: Any) -> Any:
            return _build(model, document, "")
        return load, _accepting_plain(model, load, dataclasses.asdict)
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
    kept: dict[int, dict[tuple[Any, ...], tuple[Any, decimal.Decimal | int]]] = {}

    def load(document: Any) -> Any:
        instance = model.model_validate(document)
        dumped = instance.model_dump(mode="json")
        dropped: list[tuple[Any, ...]] = []
        found: list[tuple[tuple[Any, ...], decimal.Decimal | int]] = []
        _walk(document, dumped, (), dropped, found)
        if dropped:
            raise _fields_dropped(model, dropped)
        if not found:
            return instance
        changed = {}
        for where, original in found:
            made = _at(dumped, where)
            if not _is_number(made):
                continue
            if isinstance(original, int):
                # An int the model made a float (a `float` field): its type as the
                # file says it (and its value, past 2**53) would change (red22b
                # finding 3: 9007199254740993 was written 9007199254740992.0).
                if type(made) is not int or made != original:
                    changed[where] = (made, original)
            elif (not isinstance(made, decimal.Decimal) or made != original) \
                    and decimal.Decimal(made) != original:
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


def _walk(document: Any, dumped: Any, where: tuple[Any, ...],
          dropped: list[tuple[Any, ...]],
          found: list[tuple[tuple[Any, ...], decimal.Decimal | int]]) -> None:
    """One walk of the plain document, alongside the model's dump (``None`` where
    they part): ``dropped`` gets where the document has an object member the dump
    has not (a field the model ignored, pydantic's default ``extra="ignore"`, at any
    depth; a field excluded from the dump; one read through an alias and written
    under its name), ``found`` where it holds a ``Decimal``, and the ``Decimal``, or
    an int the dump holds as something else (a ``float`` field's), and the int."""
    if isinstance(document, dict):
        parallel = dumped if isinstance(dumped, dict) else None
        for k, v in document.items():
            if parallel is not None and k not in parallel:
                dropped.append((*where, k))
            elif isinstance(v, (dict, list)):
                _walk(v, None if parallel is None else parallel[k], (*where, k), dropped,
                      found)
            elif isinstance(v, decimal.Decimal):
                found.append(((*where, k), v))
            elif _int_made_other(v, _ABSENT if parallel is None else parallel.get(k, _ABSENT)):
                found.append(((*where, k), v))
    elif isinstance(document, list):
        items = (dumped if isinstance(dumped, list) and len(dumped) == len(document)
                 else None)
        for i, v in enumerate(document):
            if isinstance(v, (dict, list)):
                _walk(v, None if items is None else items[i], (*where, i), dropped, found)
            elif isinstance(v, decimal.Decimal):
                found.append(((*where, i), v))
            elif _int_made_other(v, _ABSENT if items is None else items[i]):
                found.append(((*where, i), v))
    elif isinstance(document, decimal.Decimal):
        found.append((where, document))
    elif _int_made_other(document, dumped if dumped is not None else _ABSENT):
        found.append((where, document))


def _int_made_other(value: Any, dumped: Any) -> bool:
    """Whether the file's ``value`` is an int (not a bool) the model's dump holds as
    something else (a float, or another int)."""
    return (type(value) is int and dumped is not _ABSENT
            and (type(dumped) is not int or dumped != value))


def _pointer(where: tuple[Any, ...]) -> str:
    return "/" + "/".join(str(k).replace("~", "~0").replace("/", "~1") for k in where)


def _fields_dropped(model: Any, dropped: list[tuple[Any, ...]]) -> FieldsDropped:
    name = getattr(model, "__name__", repr(model))
    shown = ", ".join(f"`{_pointer(w)}`" for w in dropped[:5])
    more = f" and {len(dropped) - 5} more" if len(dropped) > 5 else ""
    return FieldsDropped(
        f"the file holds fields that {name} would drop at the next commit: {shown}{more} "
        f"(a pydantic model ignores undeclared fields by default, extra=\"ignore\")",
        f"keep them with `model_config = ConfigDict(extra=\"allow\")` on {name} (and on "
        f"any nested model that drops them), or declare them as fields; "
        f"`extra=\"forbid\"` refuses such files instead; a field read through an alias "
        f"must also be written under it (`serialize_by_alias=True`); nothing was changed")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


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
