"""Rebinding the ``as`` name of a transaction's ``with`` block.

::

    with store.transaction() as state:
        state = {"n": 1}        # a new object: the transaction never sees it

The transaction commits the object it handed out, so the new document would be lost
and the old one committed as if nothing happened. To make that an error instead, the
transaction finds, when it is entered, which name the ``with`` statement binds its
result to (the instruction after the one that called ``__enter__``/``__aenter__``:
``STORE_FAST``, ``STORE_NAME``, ``STORE_GLOBAL`` or ``STORE_DEREF``), and, when the
block ends without an exception in that same frame, whether the name still refers to
the object handed out. Anything else (no ``as``, unpacking, an attribute or item as
the target, ``__enter__`` called by hand or by ``contextlib.ExitStack``, an
interpreter whose bytecode this module does not know) is not checked, and never
fails: every step here is best-effort, and an unexpected error means "not checked".

Checked on CPython 3.9 to 3.13 (python/tests/test_rebind.py runs under each
interpreter it finds); 3.14's ``with`` (``LOAD_SPECIAL`` + ``CALL``) is recognised
but was not run. Other implementations (no ``sys._getframe``) are not checked.
"""

from __future__ import annotations

import dis
import sys
import weakref
from types import CodeType, FrameType
from typing import Any, Optional

# The instructions that call __enter__ / __aenter__ (3.9-3.13), and those between
# them and the store of an `async with` (the await of __aenter__'s coroutine).
_ENTER = {"SETUP_WITH", "BEFORE_WITH", "BEFORE_ASYNC_WITH"}
_AWAIT = {"GET_AWAITABLE", "LOAD_CONST", "YIELD_FROM", "SETUP_ASYNC_WITH", "SEND",
          "YIELD_VALUE", "RESUME", "JUMP_BACKWARD_NO_INTERRUPT", "END_SEND",
          "CLEANUP_THROW", "EXTENDED_ARG", "CACHE", "NOP"}
_STORE = {"STORE_FAST": "fast", "STORE_NAME": "name", "STORE_GLOBAL": "global",
          "STORE_DEREF": "deref", "STORE_FAST_LOAD_FAST": "fast",
          "STORE_FAST_STORE_FAST": "fast"}

# code -> {offset of an instruction inside a `with ... as NAME` entry: (NAME, kind)}
_targets: "weakref.WeakKeyDictionary[CodeType, dict[int, tuple[str, str]]]" = (
    weakref.WeakKeyDictionary())


def _scan(code: CodeType) -> dict[int, tuple[str, str]]:
    """Every `with`/`async with` entry of `code` that binds a plain name: the offsets
    from the instruction that calls __enter__ to the store, each to (name, kind)."""
    found: dict[int, tuple[str, str]] = {}
    ins = list(dis.get_instructions(code))
    for i, op in enumerate(ins):
        start = None
        if op.opname in _ENTER:
            start = i
        elif (op.opname == "CALL" and i >= 1 and ins[i - 1].opname == "LOAD_SPECIAL"
              and ins[i - 1].argrepr in ("__enter__", "__aenter__")):
            start = i  # 3.14: LOAD_SPECIAL __enter__; CALL 0; STORE_FAST
        if start is None:
            continue
        j = start + 1
        while j < len(ins) and ins[j].opname in _AWAIT:
            j += 1
        if j >= len(ins) or ins[j].opname not in _STORE:
            continue
        name = ins[j].argval
        if isinstance(name, tuple):  # STORE_FAST_LOAD_FAST: (stored, loaded)
            name = name[0]
        if not isinstance(name, str):
            continue
        # Every code unit between, inline caches included (3.12 reports the cache
        # after SEND as the frame's last instruction while __aenter__ runs).
        for offset in range(ins[start].offset, ins[j].offset, 2):
            found[offset] = (name, _STORE[ins[j].opname])
    return found


class Binding:
    """Where a `with ... as NAME` in one running frame put the object handed out."""

    __slots__ = ("frame_id", "code", "name", "kind")

    def __init__(self, frame_id: int, code: CodeType, name: str, kind: str) -> None:
        # The frame's id, not the frame: a reference from a native transaction (no
        # garbage-collector support) to its caller's frame would be a cycle never freed.
        self.frame_id = frame_id
        self.code = code
        self.name = name
        self.kind = kind


def capture(depth: int) -> Optional[Binding]:
    """The binding of the `with` statement running `depth` frames above this call's
    caller (0: the caller itself), or None when there is none or it is not known."""
    try:
        frame = sys._getframe(depth + 1)
        code = frame.f_code
        targets = _targets.get(code)
        if targets is None:
            targets = _scan(code)
            _targets[code] = targets
        target = targets.get(frame.f_lasti)
        if target is None:
            return None
        return Binding(id(frame), code, *target)
    except Exception:  # noqa: BLE001 - best effort: not checked
        return None


_UNBOUND: Any = object()


def rebound(binding: Optional[Binding], handed_out: Any, depth: int) -> Optional[str]:
    """The name, when the frame `depth` frames above this call's caller is the frame
    `binding` was captured in and its name no longer refers to `handed_out`."""
    if binding is None:
        return None
    try:
        frame: FrameType = sys._getframe(depth + 1)
        if id(frame) != binding.frame_id or frame.f_code is not binding.code:
            return None  # exited from elsewhere (ExitStack, by hand): not checked
        if binding.kind == "global":
            now = frame.f_globals.get(binding.name, _UNBOUND)
        else:
            now = frame.f_locals.get(binding.name, _UNBOUND)
        if now is _UNBOUND or now is handed_out:
            return None  # `del state` loses nothing: the object is still committed
        return binding.name
    except Exception:  # noqa: BLE001 - best effort: not checked
        return None


def error(path: str, name: str) -> Exception:
    """The `UsageError` for a block that rebound `name` (nothing was committed)."""
    from ._errors import UsageError

    return UsageError(
        f"transaction of `{path}`: `{name}`, the name the `with` statement bound the "
        f"document to, refers to another object at the end of the block; the "
        f"transaction commits the document it handed out, so the new object would be "
        f"lost and the old document written as if nothing happened: nothing was "
        f"committed",
        path=path,
        hint=f"change the document in place (`{name}[key] = ...`, `{name}.update(...)`, "
             f"`{name}.field = ...`), or write a new document with "
             f"`store.replace(new)` or `store.update(lambda {name}: new)` (a function "
             f"returning the new document)")
