"""Typed, lifetime-safe views over lws' per-session buffers.

A session-data type is a :class:`Struct` subclass, declared either from C text
with :func:`struct` or as an annotated class using the types in :mod:`lws.c`.
Both end up in the same place: the C text is parsed by a private ``cffi.FFI()``
(cdef only, nothing is compiled), which computes the layout exactly as the C
compiler lays out the struct, and the class gets one accessor per field.

The binding makes a view with ``Cls.view(address, guard)`` over the buffer lws
allocated (``Cls.size`` bytes, the protocol's ``per_session_data_size``).
A view reads and writes *that* memory, never a copy, and every access goes
through the :class:`~lws._guard.Guard`: once the binding kills the guard
(just before lws frees the buffer), every use of the view, and of any array or
nested view taken from it, raises :class:`~lws.errors.SessionClosed`.

Only copies (``int``, ``float``, ``bool``, ``bytes``, lists and dicts of those)
and guarded sub-views ever leave a view; no cffi object pointing into the
session buffer is handed out.
"""

from __future__ import annotations

import itertools
import keyword
import math
import numbers
import operator
import os
import re
import struct as _pystruct
import sys
import threading
import types
import typing
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

import cffi

from . import c
from ._guard import Guard
from .errors import DeclarationError

__all__ = ["ArrayView", "FieldInfo", "Struct", "assign", "struct"]

_S = TypeVar("_S", bound="Struct")


# ---------------------------------------------------------------------------
# Field descriptions
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldInfo:
    """How one field of a session struct is laid out and accessed.

    ``kind`` is ``"int"`` (integers, enums, bit-fields), ``"bool"``, ``"float"``,
    ``"char"`` (a single ``char``), ``"pointer"``, ``"string"`` (``char[N]``),
    ``"array"`` or ``"struct"``. ``offset`` and ``size`` are in bytes (for a
    bit-field: of its storage unit; ``bit_offset``/``bit_width`` place the bits
    in it). ``length`` is the element count of arrays and strings. ``struct`` is
    the :class:`Struct` class of a nested struct (or of an array's elements).
    """

    name: str
    c_type: str
    kind: str
    offset: int
    size: int
    bit_offset: int | None = None
    bit_width: int | None = None
    length: int | None = None
    struct: type[Struct] | None = None


# ---------------------------------------------------------------------------
# Guard helper for the paths that are not hot
# ---------------------------------------------------------------------------


def _enter(g: Guard) -> bool:
    """Check ``g`` is alive, taking its lock off the lws thread; True if locked.

    The caller releases ``g.lock`` when this returns True.
    """
    if g.on_lws_thread():
        if not g.alive:
            raise g.closed()
        return False
    g.lock.acquire()
    if not g.alive:
        g.lock.release()
        raise g.closed()
    return True


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------
# Codecs: one per C type of a declaration; they convert between Python values
# and the cffi view of the memory. They only ever run while the guard is held
# (load/snap, on real memory) or on private temporaries (fill).
# ---------------------------------------------------------------------------

_F32 = _pystruct.Struct("=f")


class _Codec:
    __slots__ = ("cname", "ctype", "ffi", "ptr", "size")
    kind: ClassVar[str] = ""
    scalar: ClassVar[bool] = False

    def __init__(self, ffi: Any, ctype: Any) -> None:
        self.ffi = ffi
        self.ctype = ctype
        self.cname = _spell(ctype)
        self.size: int = ffi.sizeof(ctype)
        self.ptr = ffi.typeof(ffi.getctype(ctype, "*"))

    # Real memory, guard held. ``raw`` is what cffi returns for the item.
    def load(self, raw: Any, addr: int, guard: Guard, where: str) -> Any:
        return raw

    def snap(self, raw: Any) -> Any:
        return raw

    # Private temporaries only: validate ``value`` and store it at ``p[0]``.
    def fill(self, p: Any, value: Any, where: str) -> None:
        raise NotImplementedError

    def prepare(self, value: Any, where: str) -> Any:
        """A fresh temporary holding ``value``, fully validated (for memmove)."""
        tmp = self.ffi.new(self.ptr)
        self.fill(tmp, value, where)
        return tmp


class _ScalarCodec(_Codec):
    """Values cffi reads as plain Python objects; written by plain assignment."""

    __slots__ = ()
    scalar = True
    #: values of exactly this type skip ``norm`` (None: always normalise)
    fast: ClassVar[type | None] = None

    def norm(self, value: Any, where: str) -> Any:
        raise NotImplementedError

    def overflow(self, value: Any, where: str, bit_width: int | None) -> OverflowError:
        return OverflowError(f"{where}: {_short(value)} does not fit {self.cname}")

    def fill(self, p: Any, value: Any, where: str) -> None:
        if type(value) is not self.fast:
            value = self.norm(value, where)
        try:
            p[0] = value
        except OverflowError:
            raise self.overflow(value, where, None) from None


class _IntCodec(_ScalarCodec):
    __slots__ = ("signed",)
    kind = "int"
    fast = int

    def __init__(self, ffi: Any, ctype: Any) -> None:
        super().__init__(ffi, ctype)
        self.signed = int(ffi.cast(ctype, -1)) < 0

    def norm(self, value: Any, where: str) -> int:
        try:
            return operator.index(value)
        except TypeError:
            raise TypeError(
                f"{where}: expected an int for {self.cname}, got {type(value).__name__}"
            ) from None

    def overflow(self, value: Any, where: str, bit_width: int | None) -> OverflowError:
        if bit_width is None:
            return super().overflow(value, where, None)
        if self.signed:
            lo, hi = -(1 << (bit_width - 1)), (1 << (bit_width - 1)) - 1
        else:
            lo, hi = 0, (1 << bit_width) - 1
        return OverflowError(
            f"{where}: {_short(value)} does not fit {self.cname}:{bit_width} (range {lo}..{hi})"
        )


class _BoolCodec(_ScalarCodec):
    __slots__ = ()
    kind = "bool"
    fast = bool

    def norm(self, value: Any, where: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value in (0, 1):
                return bool(value)
            raise OverflowError(f"{where}: {_short(value)} does not fit _Bool (use True/False)")
        raise TypeError(f"{where}: expected a bool for _Bool, got {type(value).__name__}")


class _FloatCodec(_ScalarCodec):
    __slots__ = ("single",)
    kind = "float"

    def __init__(self, ffi: Any, ctype: Any) -> None:
        super().__init__(ffi, ctype)
        self.single = self.size == 4

    def norm(self, value: Any, where: str) -> float:
        result: float
        if type(value) is float:
            result = value
        else:
            if not isinstance(value, numbers.Real):
                raise TypeError(
                    f"{where}: expected a float for {self.cname}, got {type(value).__name__}"
                )
            try:
                result = float(value)
            except OverflowError:
                raise self.overflow(value, where, None) from None
        if self.single and math.isfinite(result):
            try:
                _F32.pack(result)
            except OverflowError:
                raise self.overflow(value, where, None) from None
        return result


class _DoubleCodec(_FloatCodec):
    __slots__ = ()
    fast = float


class _CharCodec(_ScalarCodec):
    __slots__ = ()
    kind = "char"

    def norm(self, value: Any, where: str) -> bytes:
        if isinstance(value, (bytes, bytearray)) and len(value) == 1:
            return bytes(value)
        raise TypeError(f"{where}: expected a bytes of length 1 for char, got {_short(value)}")


class _PointerCodec(_Codec):
    """Opaque pointers: the address is readable, the target never is."""

    __slots__ = ("null_only", "uintptr")
    kind = "pointer"

    def __init__(self, ffi: Any, ctype: Any, null_only: bool) -> None:
        super().__init__(ffi, ctype)
        self.null_only = null_only
        self.uintptr = ffi.typeof("uintptr_t")

    def load(self, raw: Any, addr: int, guard: Guard, where: str) -> int:
        return int(self.ffi.cast(self.uintptr, raw))

    def snap(self, raw: Any) -> int:
        return int(self.ffi.cast(self.uintptr, raw))

    def address_of(self, value: Any, where: str) -> int:
        if value is None or (type(value) is int and value == 0):
            return 0
        method = None if self.null_only else getattr(value, "__lws_address__", None)
        if method is None:
            what = "None or 0" if self.null_only else "None, 0 or a connection"
            raise TypeError(
                f"{where}: a {self.cname} field only accepts {what} (C: NULL"
                f"{'' if self.null_only else ' or a wsi'}), not {_short(value)}; "
                "session data never holds Python objects or raw addresses"
            )
        address = method()
        if type(address) is not int or not 0 <= address <= int(self.ffi.cast(self.uintptr, -1)):
            raise TypeError(f"{where}: {_short(value)}.__lws_address__() returned {address!r}")
        return address

    def fill(self, p: Any, value: Any, where: str) -> None:
        p[0] = self.ffi.cast(self.ctype, self.address_of(value, where))


class _StringCodec(_Codec):
    """``char[N]``: a NUL-terminated string of at most N-1 bytes."""

    __slots__ = ("length",)
    kind = "string"

    def __init__(self, ffi: Any, ctype: Any) -> None:
        super().__init__(ffi, ctype)
        self.length: int = ctype.length

    def load(self, raw: Any, addr: int, guard: Guard, where: str) -> bytes:
        result: bytes = self.ffi.string(raw)
        return result

    def snap(self, raw: Any) -> bytes:
        result: bytes = self.ffi.string(raw)
        return result

    def padded(self, value: Any, where: str) -> bytes:
        if isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
        else:
            raise TypeError(f"{where}: expected bytes or str for {self.cname}, got {_short(value)}")
        if b"\0" in data:
            raise ValueError(
                f"{where}: the value contains a NUL byte; {self.cname} holds a C string"
            )
        room = self.length - 1
        if len(data) > room:
            raise ValueError(
                f"{where}: {len(data)} bytes do not fit {self.cname} "
                f"(at most {room} bytes, plus the terminating NUL)"
            )
        return data + b"\0" * (self.length - len(data))

    def fill(self, p: Any, value: Any, where: str) -> None:
        p[0] = self.padded(value, where)


class _ArrayCodec(_Codec):
    __slots__ = ("item", "length")
    kind = "array"

    def __init__(self, ffi: Any, ctype: Any, item: _Codec) -> None:
        super().__init__(ffi, ctype)
        self.item = item
        self.length: int = ctype.length

    def load(self, raw: Any, addr: int, guard: Guard, where: str) -> ArrayView:
        return ArrayView._make(addr, guard, self, where)

    def snap(self, raw: Any) -> list[Any]:
        snap = self.item.snap
        return [snap(raw[i]) for i in range(self.length)]

    def values(self, value: Any, where: str) -> list[Any]:
        if isinstance(value, ArrayView):
            items = value.tolist()
        elif isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
            raise TypeError(
                f"{where}: expected a sequence of {self.length} values for {self.cname}, "
                f"got {type(value).__name__}"
            )
        else:
            items = list(value)
        if len(items) != self.length:
            raise ValueError(
                f"{where}: expected {self.length} values for {self.cname}, got {len(items)}"
            )
        return items

    def fill(self, p: Any, value: Any, where: str) -> None:
        items = self.values(value, where)
        item = self.item
        if isinstance(item, _ScalarCodec):
            arr = p[0]
            fast = item.fast
            for i, v in enumerate(items):
                if type(v) is not fast:
                    v = item.norm(v, f"{where}[{i}]")
                try:
                    arr[i] = v
                except OverflowError:
                    raise item.overflow(v, f"{where}[{i}]", None) from None
        else:
            base = self.ffi.cast(item.ptr, p)
            for i, v in enumerate(items):
                item.fill(base + i, v, f"{where}[{i}]")


class _Member:
    """One field of a struct codec."""

    __slots__ = ("bit_width", "codec", "name")

    def __init__(self, name: str, codec: _Codec, bit_width: int | None) -> None:
        self.name = name
        self.codec = codec
        self.bit_width = bit_width


class _StructCodec(_Codec):
    __slots__ = ("cls", "members")
    kind = "struct"

    def __init__(self, ffi: Any, ctype: Any, cls: type[Struct]) -> None:
        super().__init__(ffi, ctype)
        self.cls = cls
        self.members: tuple[_Member, ...] = ()

    def load(self, raw: Any, addr: int, guard: Guard, where: str) -> Struct:
        return self.cls._make(addr, guard)

    def snap(self, raw: Any) -> dict[str, Any]:
        return {m.name: m.codec.snap(getattr(raw, m.name)) for m in self.members}

    def fill(self, p: Any, value: Any, where: str) -> None:
        name = self.cls.__name__
        if isinstance(value, Struct):
            if type(value) is not self.cls:
                raise TypeError(
                    f"{where}: expected a {name} view or a dict, got a {type(value).__name__} view"
                )
            value = value.to_dict()
        elif not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a {name} view or a dict, got {_short(value)}")
        known = {m.name for m in self.members}
        for key in value:
            if key not in known:
                raise ValueError(f"{where}: {name} has no field {key!r}")
        for m in self.members:
            if m.name not in value:
                continue  # like a C designated initializer: left zero
            v = value[m.name]
            w = f"{where}.{m.name}"
            codec = m.codec
            if isinstance(codec, _ScalarCodec):
                if type(v) is not codec.fast:
                    v = codec.norm(v, w)
                try:
                    setattr(p, m.name, v)
                except OverflowError:
                    raise codec.overflow(v, w, m.bit_width) from None
            else:
                codec.fill(self.ffi.addressof(p, m.name), v, w)


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------


class ArrayView(Sequence[Any]):
    """A guarded view of an array field (any array but ``char[N]``).

    Supports ``len``, indexing (negative too), assignment to one element,
    iteration, slicing (returns a list) and :meth:`tolist`. Arrays of structs
    or arrays give nested views. Equality is identity: compare ``tolist()``.
    Made only by the struct view it comes from.
    """

    __slots__ = ("_addr", "_codec", "_guard", "_p", "_where")

    _p: Any
    _guard: Guard
    _addr: int
    _codec: _ArrayCodec
    _where: str

    def __new__(cls, *args: Any, **kwargs: Any) -> ArrayView:
        raise TypeError("array views are made by the session view they belong to")

    @classmethod
    def _make(cls, addr: int, guard: Guard, codec: _ArrayCodec, where: str) -> ArrayView:
        self = object.__new__(cls)
        self._p = codec.ffi.cast(codec.item.ptr, addr)
        self._guard = guard
        self._addr = addr
        self._codec = codec
        self._where = where
        return self

    @property
    def alive(self) -> bool:
        """False once lws freed the buffer (every use then raises SessionClosed)."""
        return self._guard.alive

    @property
    def address(self) -> int:
        """Address of the first element (informational)."""
        return self._addr

    def _index(self, index: Any) -> int:
        n = self._codec.length
        if type(index) is int and 0 <= index < n:
            return index
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"{self._where} indices must be integers, not {type(index).__name__}"
            ) from None
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self._where} index {index} out of range (length {n})")
        return i

    def __len__(self) -> int:
        g = self._guard
        if _enter(g):
            g.lock.release()
        return self._codec.length

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        codec = self._codec
        item = codec.item
        g = self._guard
        if isinstance(index, slice):
            indices = range(*index.indices(codec.length))
            locked = _enter(g)
            try:
                p, addr, size, where = self._p, self._addr, item.size, self._where
                return [item.load(p[i], addr + i * size, g, f"{where}[{i}]") for i in indices]
            finally:
                if locked:
                    g.lock.release()
        i = self._index(index)
        if item.scalar:  # the common case, kept short like a field read
            if g.on_lws_thread():
                if g.alive:
                    return self._p[i]
                raise g.closed()
            with g.lock:
                if g.alive:
                    return self._p[i]
                raise g.closed()
        locked = _enter(g)
        try:
            return item.load(self._p[i], self._addr + i * item.size, g, f"{self._where}[{i}]")
        finally:
            if locked:
                g.lock.release()

    def __setitem__(self, index: int, value: Any) -> None:
        if isinstance(index, slice):
            raise TypeError(
                f"{self._where}: slice assignment is not supported; assign the whole array"
            )
        i = self._index(index)
        item = self._codec.item
        g = self._guard
        if isinstance(item, _ScalarCodec):
            if type(value) is not item.fast:
                value = item.norm(value, f"{self._where}[{i}]")
            locked = _enter(g)
            try:
                self._p[i] = value
            except OverflowError:
                raise item.overflow(value, f"{self._where}[{i}]", None) from None
            finally:
                if locked:
                    g.lock.release()
            return
        tmp = item.prepare(value, f"{self._where}[{i}]")
        locked = _enter(g)
        try:
            item.ffi.memmove(self._p + i, tmp, item.size)
        finally:
            if locked:
                g.lock.release()

    def __iter__(self) -> Iterator[Any]:
        for i in range(self._codec.length):
            yield self[i]

    def tolist(self) -> list[Any]:
        """A plain snapshot (lists, dicts, bytes, numbers), taken atomically."""
        codec = self._codec
        snap = codec.item.snap
        g = self._guard
        locked = _enter(g)
        try:
            p = self._p
            return [snap(p[i]) for i in range(codec.length)]
        finally:
            if locked:
                g.lock.release()

    def __repr__(self) -> str:
        try:
            head = f"<ArrayView {self._where} {self._codec.cname}"
            try:
                return f"{head}: {self.tolist()!r}>"
            except ReferenceError:
                return f"{head} (closed: {self._guard.why})>"
        except Exception:
            return f"<ArrayView at {id(self):#x}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class _StructMeta(type):
    """Turns an annotated Struct subclass into a laid-out session type."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        ns: dict[str, Any],
        **kwargs: Any,
    ) -> _StructMeta:
        c_name = kwargs.pop("c_name", None)
        struct_bases = [b for b in bases if isinstance(b, _StructMeta)]
        if not struct_bases:  # Struct itself
            return super().__new__(mcls, name, bases, ns, **kwargs)
        for b in struct_bases:
            if "size" in b.__dict__:
                raise DeclarationError(
                    f"{name}: cannot subclass the declared struct {b.__name__}; C structs "
                    "have no inheritance (nest it as a field instead)"
                )
        if ns.get("__slots__", ()) not in ((), []):
            raise DeclarationError(f"{name}: a session struct cannot declare __slots__")
        ns["__slots__"] = ()
        generated = ns.pop("_lws_generated", False)
        cls = super().__new__(mcls, name, bases, ns, **kwargs)
        if generated:
            return cls
        annotations = ns.get("__annotations__")
        if annotations is None:  # Python 3.14+: annotations are evaluated lazily
            try:
                annotations = dict(getattr(cls, "__annotations__", {}))
            except Exception as exc:
                raise DeclarationError(f"{name}: cannot evaluate its annotations: {exc}") from None
        # String annotations (from __future__ import annotations) are evaluated
        # where the class statement ran: its module globals and function locals.
        frame = sys._getframe(1)
        localns = dict(frame.f_locals)
        localns.update(ns)
        _declare_class(cls, annotations, frame.f_globals, localns, c_name)
        return cls

    def __init__(
        cls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(name, bases, ns)

    def __getitem__(cls, dims: Any) -> c.Array:
        if "size" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} has no layout; index a declared session struct")
        return c.array(cls, dims)


class Struct(metaclass=_StructMeta):
    """Base of session-data types; a subclass is a typed view of one session buffer.

    Subclass it with annotated fields (types from :mod:`lws.c`), or make one from
    C text with :func:`struct`. Class attributes of a declared type:

    ``c_name``
        The C type name, e.g. ``"struct per_session_data__minimal"``.
    ``c_declaration``
        C text declaring it (and the structs it nests).
    ``size``
        ``sizeof`` the struct: the protocol's ``per_session_data_size``.
    ``fields``
        Read-only mapping of field name to :class:`FieldInfo`, in order.

    Instances are views made by the binding with :meth:`view`; they have one
    attribute per field plus :meth:`to_dict`, ``alive`` and ``address``.
    Equality and hashing are by identity.
    """

    __slots__ = ("_addr", "_guard", "_p")

    c_name: ClassVar[str]
    c_declaration: ClassVar[str]
    size: ClassVar[int]
    fields: ClassVar[Mapping[str, FieldInfo]]
    _lws_codec: ClassVar[_StructCodec]
    _lws_parts: ClassVar[tuple[tuple[object, str], ...]]

    _p: Any
    _guard: Guard
    _addr: int

    def __new__(cls, *args: Any, **kwargs: Any) -> Struct:
        raise TypeError(
            f"{cls.__name__} cannot be instantiated: session views are made by the binding "
            "over the per-session buffer lws allocated (conn.session); "
            f"tests can use {cls.__name__}.view(address, guard)"
        )

    @classmethod
    def view(cls: type[_S], address: int, guard: Guard) -> _S:
        """A view over ``size`` bytes at ``address``, valid while ``guard`` is alive.

        Called by the binding with the address lws passes as ``user`` (or by
        tests, with memory they own). The memory must stay allocated until
        ``guard.kill(why)`` has returned.
        """
        if "size" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} has no layout; declare fields first")
        if type(address) is not int:
            raise TypeError(f"address must be an int, not {type(address).__name__}")
        if address <= 0:
            raise ValueError(f"address must be a non-NULL address, not {address}")
        if not isinstance(guard, Guard):
            raise TypeError(f"guard must be a lws._guard.Guard, not {type(guard).__name__}")
        return cls._make(address, guard)

    @classmethod
    def _make(cls: type[_S], address: int, guard: Guard) -> _S:
        self = object.__new__(cls)
        self._p = cls._lws_codec.ffi.cast(cls._lws_codec.ptr, address)
        self._guard = guard
        self._addr = address
        return self

    @property
    def alive(self) -> bool:
        """False once lws freed the buffer (every use then raises SessionClosed)."""
        return self._guard.alive

    @property
    def address(self) -> int:
        """Address of the buffer (informational; it is never dereferenced by Python)."""
        return self._addr

    def to_dict(self) -> dict[str, Any]:
        """A plain snapshot of every field (nested dicts/lists, bytes, ints), taken atomically."""
        g = self._guard
        locked = _enter(g)
        try:
            return type(self)._lws_codec.snap(self._p)
        finally:
            if locked:
                g.lock.release()

    def __repr__(self) -> str:
        name = type(self).__name__
        try:
            try:
                items = self.to_dict()
            except ReferenceError:
                return f"<{name} (closed: {self._guard.why})>"
            body = " ".join(f"{k}={v!r}" for k, v in items.items())
            return f"<{name} {body}>"
        except Exception:
            return f"<{name} at {id(self):#x}>"

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


def assign(view: Struct, values: Mapping[str, Any] | Struct) -> None:
    """Replace the whole struct behind ``view``, like ``*pss = (struct x){ .a = 1 }`` in C.

    ``values`` is a dict of field values (nested dicts/lists for nested
    structs and arrays) or another view of the same type. Every value is
    validated first; fields not given become zero; if anything is invalid,
    nothing is written.
    """
    if not isinstance(view, Struct) or "size" not in type(view).__dict__:
        raise TypeError(f"expected a session view, not {type(view).__name__}")
    codec = type(view)._lws_codec
    tmp = codec.prepare(values, type(view).__name__)
    g = view._guard
    locked = _enter(g)
    try:
        codec.ffi.memmove(view._p, tmp, codec.size)
    finally:
        if locked:
            g.lock.release()


#: attribute names a field may not take (the view's own API and internals)
_RESERVED = frozenset(dir(Struct)) | {
    "_p",
    "_guard",
    "_addr",
    "c_name",
    "c_declaration",
    "size",
    "fields",
    "_lws_codec",
    "_lws_parts",
}


_HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Per-field accessors, built once per class
# ---------------------------------------------------------------------------


def _scalar_property(name: str, codec: _ScalarCodec, where: str, bit_width: int | None) -> property:
    fast = codec.fast
    norm = codec.norm
    overflow = codec.overflow

    def slow_get(self: Struct) -> Any:
        g = self._guard
        if g.on_lws_thread():
            raise g.closed()  # on the lws thread, only a dead buffer gets here
        with g.lock:
            if g.alive:
                return getattr(self._p, name)
            raise g.closed()

    def slow_set(self: Struct, value: Any) -> None:
        g = self._guard
        if g.on_lws_thread():
            raise g.closed()
        with g.lock:
            if not g.alive:
                raise g.closed()
            setattr(self._p, name, value)

    # The hot path is generated with the field name spelled out (an attribute
    # load on the cdata instead of a getattr() call): on the lws thread a
    # live check is all it takes (see lws._guard).
    attr = name if name.isidentifier() and not keyword.iskeyword(name) else None
    get_expr = f"self._p.{attr}" if attr else "getattr(self._p, name)"
    set_stmt = f"self._p.{attr} = value" if attr else "setattr(self._p, name, value)"
    source = (
        "def fget(self):\n"
        "    g = self._guard\n"
        "    if g.alive and ident() == g.owner.ident:\n"
        f"        return {get_expr}\n"
        "    return slow_get(self)\n"
        "def fset(self, value):\n"
        "    if type(value) is not fast:\n"
        "        value = norm(value, where)\n"
        "    g = self._guard\n"
        "    try:\n"
        "        if g.alive and ident() == g.owner.ident:\n"
        f"            {set_stmt}\n"
        "        else:\n"
        "            slow_set(self, value)\n"
        "    except OverflowError:\n"
        "        raise overflow(value, where, bit_width) from None\n"
    )
    scope: dict[str, Any] = {
        "ident": threading.get_ident, "slow_get": slow_get, "slow_set": slow_set,
        "fast": fast, "norm": norm, "where": where, "overflow": overflow,
        "bit_width": bit_width, "name": name,
    }
    # Named as a file of this package, so tracebacks and lws.testing's
    # "where did user code touch the view" both see binding code here.
    filename = f"{_HERE}{os.sep}<field {where}>"
    exec(compile(source, filename, "exec"), scope)  # a fixed template
    return property(scope["fget"], scope["fset"], doc=f"{codec.cname} {name}")


def _composite_property(name: str, codec: _Codec, offset: int, where: str) -> property:
    memmove = codec.ffi.memmove
    addressof = codec.ffi.addressof
    load = codec.load
    size = codec.size
    if isinstance(codec, _StringCodec):
        padded = codec.padded

        def prepare(value: Any, where: str) -> Any:
            return padded(value, where)

        def store(p: Any, data: Any) -> None:
            setattr(p, name, data)

    else:
        prepare = codec.prepare

        def store(p: Any, data: Any) -> None:
            memmove(addressof(p, name), data, size)

    def fget(self: Struct) -> Any:
        g = self._guard
        locked = _enter(g)
        try:
            return load(getattr(self._p, name), self._addr + offset, g, where)
        finally:
            if locked:
                g.lock.release()

    def fset(self: Struct, value: Any) -> None:
        data = prepare(value, where)  # validated before the buffer is touched
        g = self._guard
        locked = _enter(g)
        try:
            store(self._p, data)
        finally:
            if locked:
                g.lock.release()

    return property(fget, fset, doc=f"{codec.cname} {name}")


# ---------------------------------------------------------------------------
# Building a class from a parsed declaration
# ---------------------------------------------------------------------------

_UNSUPPORTED_PRIMITIVES = {
    "long double": "long double (no exact Python equivalent)",
    "wchar_t": "wchar_t (use char[N] for text)",
    "char16_t": "char16_t (use char[N] for text)",
    "char32_t": "char32_t (use char[N] for text)",
}


def _spell(ctype: Any) -> str:
    name: str = ctype.cname
    return re.sub(r"\$\w*", "struct <anonymous>", name)


class _Builder:
    """Turns the cffi types of one declaration into codecs and classes."""

    def __init__(
        self,
        ffi: Any,
        declaration: str,
        parts: tuple[tuple[object, str], ...],
        known: dict[Any, type[Struct]],
        module: str,
    ) -> None:
        self.ffi = ffi
        self.declaration = declaration
        self.parts = parts
        self.known = known
        self.module = module
        self.codecs: dict[Any, _Codec] = {}

    def codec(self, ctype: Any, where: str) -> _Codec:
        found = self.codecs.get(ctype)
        if found is not None:
            return found
        made = self._make_codec(ctype, where)
        self.codecs[ctype] = made
        return made

    def _make_codec(self, ctype: Any, where: str) -> _Codec:
        ffi = self.ffi
        kind = ctype.kind
        if kind == "primitive":
            cname = ctype.cname
            if cname in _UNSUPPORTED_PRIMITIVES or "complex" in cname.lower():
                why = _UNSUPPORTED_PRIMITIVES.get(cname, "_Complex")
                raise DeclarationError(f"{where}: {why} is not supported")
            if cname == "_Bool":
                return _BoolCodec(ffi, ctype)
            if cname == "char":
                return _CharCodec(ffi, ctype)
            if cname == "double":
                return _DoubleCodec(ffi, ctype)
            if cname == "float":
                return _FloatCodec(ffi, ctype)
            try:
                return _IntCodec(ffi, ctype)
            except (TypeError, ValueError):
                raise DeclarationError(f"{where}: {cname} is not supported") from None
        if kind == "enum":
            return _IntCodec(ffi, ctype)
        if kind == "pointer":
            return _PointerCodec(ffi, ctype, null_only=False)
        if kind == "function":
            return _PointerCodec(ffi, ctype, null_only=True)
        if kind == "array":
            length = ctype.length
            if length is None:
                raise DeclarationError(
                    f"{where}: flexible array members ({_spell(ctype)}) are not supported; "
                    "give the array a length"
                )
            if length == 0:
                raise DeclarationError(f"{where}: zero-length arrays are not supported")
            if ctype.item.kind == "primitive" and ctype.item.cname == "char":
                return _StringCodec(ffi, ctype)
            return _ArrayCodec(ffi, ctype, self.codec(ctype.item, where + "[]"))
        if kind == "struct":
            cls = self.known.get(ctype)
            if cls is None:
                cls = self._new_class(ctype, where)
            codec = _StructCodec(ffi, ctype, cls)
            self.codecs[ctype] = codec
            self.fill_struct(codec, cls, install="size" not in cls.__dict__)
            if cls.size != codec.size:  # pragma: no cover - same text, same layout
                raise DeclarationError(f"{where}: inconsistent layout of {cls.__name__}")
            return codec
        if kind == "union":
            raise DeclarationError(f"{where}: unions are not supported")
        raise DeclarationError(f"{where}: {_spell(ctype)} is not supported")

    def _new_class(self, ctype: Any, where: str) -> type[Struct]:
        cname = ctype.cname
        if cname.startswith("$"):
            pyname = where
        elif cname.startswith("struct "):
            pyname = cname[len("struct ") :]
        else:
            pyname = cname
        return _generated_class(pyname, self.module)

    def fill_struct(self, codec: _StructCodec, cls: type[Struct], install: bool) -> None:
        ffi = self.ffi
        ctype = codec.ctype
        owner = cls.__name__
        try:
            size = ffi.sizeof(ctype)
            raw_fields = ctype.fields
        except DeclarationError:
            raise
        except Exception as exc:
            raise DeclarationError(f"{owner}: {_message(exc)}") from None
        if not raw_fields:
            raise DeclarationError(f"{owner} has no fields; a session struct needs at least one")
        members: list[_Member] = []
        infos: dict[str, FieldInfo] = {}
        spans: list[tuple[int, int, str]] = []
        for fname, cf in raw_fields:
            where = f"{owner}.{fname}"
            if install:
                _check_field_name(owner, fname, cls)
            fcodec = self.codec(cf.type, where)
            bit_width = cf.bitsize if cf.bitshift >= 0 else None
            members.append(_Member(fname, fcodec, bit_width))
            if bit_width is not None:
                start = cf.offset * 8 + cf.bitshift
                spans.append((start, start + bit_width, fname))
            else:
                spans.append((cf.offset * 8, (cf.offset + fcodec.size) * 8, fname))
            infos[fname] = _field_info(fname, cf, fcodec, bit_width)
        spans.sort()
        for (_s1, e1, n1), (s2, _e2, n2) in itertools.pairwise(spans):
            if s2 < e1:
                raise DeclarationError(
                    f"{owner}: fields {n1!r} and {n2!r} overlap (an anonymous union?); "
                    "unions are not supported"
                )
        codec.members = tuple(members)
        if not install:
            return
        for m in members:
            where = f"{owner}.{m.name}"
            if isinstance(m.codec, _ScalarCodec):
                prop = _scalar_property(m.name, m.codec, where, m.bit_width)
            else:
                prop = _composite_property(m.name, m.codec, infos[m.name].offset, where)
            type.__setattr__(cls, m.name, prop)
        type.__setattr__(cls, "size", size)
        type.__setattr__(cls, "fields", types.MappingProxyType(infos))
        type.__setattr__(cls, "_lws_codec", codec)
        type.__setattr__(cls, "_lws_parts", self.parts)
        if "c_name" not in cls.__dict__:
            cname = ctype.cname
            type.__setattr__(
                cls, "c_name", "struct <anonymous>" if cname.startswith("$") else cname
            )
        if "c_declaration" not in cls.__dict__:
            type.__setattr__(cls, "c_declaration", self.declaration)


def _field_info(name: str, cf: Any, codec: _Codec, bit_width: int | None) -> FieldInfo:
    nested: type[Struct] | None = None
    inner: _Codec = codec
    while isinstance(inner, _ArrayCodec):
        inner = inner.item
    if isinstance(inner, _StructCodec):
        nested = inner.cls
    length = getattr(codec, "length", None)
    c_type = codec.cname if bit_width is None else f"{codec.cname}:{bit_width}"
    return FieldInfo(
        name=name,
        c_type=c_type,
        kind=codec.kind,
        offset=cf.offset,
        size=codec.size,
        bit_offset=cf.bitshift if bit_width is not None else None,
        bit_width=bit_width,
        length=length,
        struct=nested,
    )


_C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while _Bool _Complex _Imaginary _Alignas
    _Alignof _Atomic _Generic _Noreturn _Static_assert _Thread_local bool""".split()
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_field_name(owner: str, name: str, cls: type) -> None:
    if not _IDENT.match(name) or name in _C_KEYWORDS:
        raise DeclarationError(f"{owner}.{name}: {name!r} is not a valid C identifier")
    if name in _RESERVED or name.startswith("__"):
        raise DeclarationError(
            f"{owner}.{name}: the name {name!r} is taken by the view's own API; rename the field"
        )
    if name in cls.__dict__:
        raise DeclarationError(
            f"{owner}.{name}: the class body also defines {name!r}; fields cannot have a "
            "value or share a name with a method (lws hands out the buffer zeroed)"
        )


def _generated_class(name: str, module: str) -> type[Struct]:
    ns: dict[str, Any] = {"__slots__": (), "_lws_generated": True, "__module__": module}
    cls = _StructMeta(name, (Struct,), ns)
    return typing.cast("type[Struct]", cls)


# ---------------------------------------------------------------------------
# Parsing C text
# ---------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z_]\w*|\.\.\.|\S")
_PROBE = cffi.FFI()  # only used to ask whether a name is a type cffi knows


def _clean(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r"(?m)^\s*#.*$", " ", text)


def _knows_type(word: str) -> bool:
    try:
        _PROBE.typeof(word)
    except Exception:
        return False
    return True


def _unknown_type_names(cleaned: str) -> list[str]:
    toks = _TOKEN.findall(cleaned)
    segments: list[list[str]] = [[]]
    after_close: list[bool] = [False]
    for tok in toks:
        if tok in ";{}":
            segments.append([])
            after_close.append(tok == "}")
        else:
            segments[-1].append(tok)
    typedefs: set[str] = set()
    for seg, closed in zip(segments, after_close, strict=True):
        idents = [t for t in seg if _IDENT.match(t)]
        if seg and seg[0] == "typedef" and idents:
            typedefs.add(idents[-1])
        if closed and idents:
            typedefs.add(idents[-1])
    skip = {
        "const",
        "volatile",
        "signed",
        "unsigned",
        "static",
        "extern",
        "typedef",
        "register",
        "inline",
        "short",
        "long",
    }
    unknown: list[str] = []
    for seg in segments:
        i = 0
        while i < len(seg) and seg[i] in skip:
            i += 1
        if i >= len(seg) or seg[i] in ("struct", "enum", "union"):
            continue
        word = seg[i]
        follows = seg[i + 1] if i + 1 < len(seg) else ""
        if not _IDENT.match(word) or not (follows == "*" or _IDENT.match(follows)):
            continue
        if word in _C_KEYWORDS or word in typedefs or word in unknown or _knows_type(word):
            continue
        unknown.append(word)
    return unknown


def _parse(text: str, what: str) -> Any:
    """A private FFI with ``text`` cdef'd, or DeclarationError."""
    ffi = cffi.FFI()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ffi.cdef(text)
    except Exception as exc:
        raise DeclarationError(_explain(text, exc, what)) from None
    return ffi


def _message(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split())


def _where_in_text(match: re.Match[str]) -> str:
    column = f", column {match[2]}" if match[2] else ""
    return f" (line {match[1]}{column}):"


def _explain(text: str, exc: BaseException, what: str) -> str:
    detail = _message(exc)
    detail = re.sub(r"\s*<cdef source string>:(\d+)(?::(\d+))?:?", _where_in_text, detail)
    detail = re.sub(r"\s*<cdef source string>:?", ":", detail)
    message = f"cannot parse {what}: {detail}"
    cleaned = _clean(text)
    hints = []
    unknown = _unknown_type_names(cleaned)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        hints.append(
            f"unknown type name(s) {names}: declare them (typedef/struct) before use; "
            "the fixed-width types (uint32_t, ...) and size_t are known, and pointers "
            "to undeclared structs (struct lws *) are fine"
        )
    if "__attribute__" in text or "#pragma" in text:
        hints.append("compiler attributes and #pragma (packed, aligned) are not supported")
    if re.search(r"(?m)^\s*#\s*(?!define\b)", text):
        hints.append("the only preprocessor line accepted is '#define NAME <integer>'")
    if hints:
        message += "; " + "; ".join(hints)
    return message


def _top_level_structs(cleaned: str) -> list[tuple[str | None, str | None]]:
    """(tag, typedef name) of each top-level struct definition, in text order."""
    toks = _TOKEN.findall(cleaned)
    out: list[tuple[str | None, str | None]] = []
    depth = 0
    stmt: list[str] = []
    opened: tuple[str | None, bool] | None = None  # (tag, is_typedef) of a struct body
    after: list[str] | None = None  # tokens after its closing brace
    for tok in toks:
        if tok == "{":
            if depth == 0 and opened is None and after is None:
                if stmt and stmt[-1] == "struct":
                    opened = (None, "typedef" in stmt)
                elif len(stmt) >= 2 and stmt[-2] == "struct":
                    opened = (stmt[-1], "typedef" in stmt)
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0 and opened is not None:
                after = []
        elif tok == ";" and depth == 0:
            if opened is not None and after is not None:
                tdname = None
                if opened[1] and after and _IDENT.match(after[0]):
                    tdname = after[0]
                if opened[0] is not None or tdname is not None:
                    out.append((opened[0], tdname))
            opened, after, stmt = None, None, []
        elif depth == 0:
            stmt.append(tok)
            if after is not None:
                after.append(tok)
    return out


def _resolve(ffi: Any, name: str, found: list[str], cleaned: str) -> tuple[Any, str]:
    """The complete struct type ``name`` (tag, ``struct tag`` or typedef) and its C name."""
    name = " ".join(name.split())
    options = [name] if name.startswith("struct ") else [name, "struct " + name]
    listing = ", ".join(found) or "none"
    for option in options:
        try:
            ctype = ffi.typeof(option)
        except cffi.CDefError as exc:
            if "unknown identifier" in str(exc):
                continue
            raise DeclarationError(f"{option}: {_message(exc)}") from None
        except Exception as exc:  # cffi lays the struct out here: bad bit-fields etc.
            raise DeclarationError(f"{option}: {_message(exc)}") from None
        if ctype.kind != "struct":
            raise DeclarationError(f"{name!r} is {_spell(ctype)}, not a struct")
        try:
            ffi.sizeof(ctype)
        except Exception:
            tag = option[len("struct ") :] if option.startswith("struct ") else option
            if re.search(rf"\bstruct\s+{re.escape(tag)}\b", cleaned):
                raise DeclarationError(
                    f"{option} is only declared, not defined (no body), so it has no "
                    f"layout; defined: {listing}"
                ) from None
            continue
        return ctype, option
    raise DeclarationError(f"no struct named {name!r} in the declaration (defined: {listing})")


def struct(declaration: str, name: str | None = None) -> type[Struct]:
    """A :class:`Struct` subclass from C text (one or more struct definitions).

    The last top-level struct defined is the session type unless ``name``
    (``"tag"``, ``"struct tag"`` or a typedef name) picks another. Define
    nested structs before the struct that contains them; ``typedef struct
    {...} name_t;`` works too. Pointers to undeclared structs (``struct lws
    *wsi``) are accepted and kept opaque. Raises
    :class:`~lws.errors.DeclarationError` for anything that cannot be laid out
    exactly or accessed safely.
    """
    if not isinstance(declaration, str):
        raise DeclarationError(f"a declaration is C text (str), not {type(declaration).__name__}")
    if name is not None and not isinstance(name, str):
        raise DeclarationError(f"name must be a str, not {type(name).__name__}")
    cleaned = _clean(declaration)
    if not cleaned.strip():
        raise DeclarationError("the declaration is empty; expected 'struct name { ... };'")
    if re.search(r"\bunion\b", cleaned):
        raise DeclarationError("unions are not supported in session structs")
    if "..." in cleaned:
        raise DeclarationError(
            "partial structs ('...') are not supported: list every field, so the layout "
            "is known exactly"
        )
    ffi = _parse(declaration, "the session struct declaration")
    tops = _top_level_structs(cleaned)
    found = [f"struct {tag}" if tag else str(td) for tag, td in tops]
    if name is not None:
        ctype, c_name = _resolve(ffi, name, found, cleaned)
    else:
        if not tops:
            raise DeclarationError("no struct definition found; expected 'struct name { ... };'")
        tag, tdname = tops[-1]
        ctype, c_name = _resolve(ffi, f"struct {tag}" if tag else str(tdname), found, cleaned)
    pyname = c_name[len("struct ") :] if c_name.startswith("struct ") else c_name
    caller = sys._getframe(1).f_globals.get("__name__", __name__)
    module = caller if isinstance(caller, str) else __name__
    text = declaration.strip() + "\n"
    parts: tuple[tuple[object, str], ...] = ((ffi, text),)
    cls = _generated_class(pyname, module)
    type.__setattr__(cls, "c_name", c_name)
    _build(ffi, ctype, cls, text, parts, {}, module)
    return cls


def _build(
    ffi: Any,
    ctype: Any,
    cls: type[Struct],
    declaration: str,
    parts: tuple[tuple[object, str], ...],
    known: dict[Any, type[Struct]],
    module: str,
) -> None:
    builder = _Builder(ffi, declaration, parts, known, module)
    try:
        complete = ffi.sizeof(ctype) > 0
    except Exception:
        complete = False
    if not complete:
        raise DeclarationError(f"{cls.c_name} is only declared, not defined (it has no body)")
    codec = _StructCodec(ffi, ctype, cls)
    builder.codecs[ctype] = codec
    try:
        builder.fill_struct(codec, cls, install=True)
    except DeclarationError:
        raise
    except Exception as exc:
        raise DeclarationError(f"{cls.__name__}: {_message(exc)}") from None


# ---------------------------------------------------------------------------
# Annotated classes
# ---------------------------------------------------------------------------


def _eval_annotation(
    owner: str, fname: str, ann: str, globalns: dict[str, Any], localns: dict[str, Any]
) -> Any:
    try:
        return eval(ann, globalns, localns)
    except DeclarationError as exc:
        raise DeclarationError(f"{owner}.{fname}: {exc}") from None
    except Exception as exc:
        raise DeclarationError(
            f"{owner}.{fname}: cannot evaluate the annotation {ann!r}: {exc}"
        ) from None


def _field_type(owner: str, fname: str, ann: Any) -> Any:
    if typing.get_origin(ann) is typing.Annotated:
        found = [m for m in ann.__metadata__ if c.is_field_type(m)]
        if len(found) != 1:
            raise DeclarationError(
                f"{owner}.{fname}: Annotated[...] needs exactly one C type (e.g. "
                f"Annotated[int, c.uint32_t]), found {len(found)}"
            )
        return found[0]
    if c.is_field_type(ann):
        return ann
    raise DeclarationError(
        f"{owner}.{fname}: {ann!r} is not a C field type; use a type from lws.c "
        "(c.uint32_t, c.char[32], c.bits(c.uint8_t, 1), ...), a declared Struct "
        "subclass, or Annotated[int, c.uint32_t]"
    )


def _struct_deps(ftype: Any, out: list[type[Struct]]) -> None:
    while isinstance(ftype, c.Array):
        ftype = ftype.element
    if isinstance(ftype, type) and issubclass(ftype, Struct) and ftype not in out:
        out.append(ftype)


def _declare_class(
    cls: type,
    annotations: Mapping[str, Any],
    globalns: dict[str, Any],
    localns: dict[str, Any],
    c_name: Any,
) -> None:
    owner = cls.__name__
    fields: list[tuple[str, Any]] = []
    for fname, ann in annotations.items():
        if isinstance(ann, str):
            ann = _eval_annotation(owner, fname, ann, globalns, localns)
        if ann is ClassVar or typing.get_origin(ann) is ClassVar:
            continue
        ftype = _field_type(owner, fname, ann)
        _check_field_name(owner, fname, cls)
        fields.append((fname, ftype))
    if not fields:
        raise DeclarationError(
            f"{owner} declares no fields; annotate at least one (e.g. 'count: c.uint32_t')"
        )
    tag = owner if c_name is None else c_name
    if not isinstance(tag, str):
        raise DeclarationError(f"{owner}: c_name must be a str, not {type(tag).__name__}")
    tag = tag[len("struct ") :].strip() if tag.startswith("struct ") else tag
    if not _IDENT.match(tag) or tag in _C_KEYWORDS:
        raise DeclarationError(
            f"{owner}: {tag!r} is not a valid C struct name; pass c_name='...' to pick one"
        )
    try:
        lines = [f"    {c.declare(ftype, fname)};" for fname, ftype in fields]
    except DeclarationError as exc:
        raise DeclarationError(f"{owner}: {exc}") from None
    own = f"struct {tag} {{\n" + "\n".join(lines) + "\n};\n"
    deps: list[type[Struct]] = []
    for _, ftype in fields:
        _struct_deps(ftype, deps)
    parts: list[tuple[object, str]] = []
    for dep in deps:
        for key, text in dep._lws_parts:
            if all(key is not k for k, _ in parts):
                parts.append((key, text))
    parts.append((cls, own))
    declaration = "\n".join(text for _, text in parts)
    ffi = _parse(declaration, f"the C text generated for {owner}")
    known: dict[Any, type[Struct]] = {}
    for dep in deps:
        for sub in _all_struct_classes(dep):
            try:
                known[ffi.typeof(sub.c_name)] = sub
            except Exception:  # anonymous nested structs have no name to look up
                continue
    type.__setattr__(cls, "c_name", f"struct {tag}")
    struct_cls = typing.cast("type[Struct]", cls)
    _build(
        ffi,
        ffi.typeof(f"struct {tag}"),
        struct_cls,
        declaration,
        tuple(parts),
        known,
        cls.__module__,
    )


def _all_struct_classes(cls: type[Struct]) -> list[type[Struct]]:
    out = [cls]
    for info in cls.fields.values():
        if info.struct is not None:
            for sub in _all_struct_classes(info.struct):
                if sub not in out:
                    out.append(sub)
    return out
