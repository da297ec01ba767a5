"""C field types for declaring session data as an annotated class.

Use these as annotations on a :class:`lws.session.Struct` subclass::

    from lws import c, session

    class Chat(session.Struct):
        wsi: c.pointer                 # void *, never dereferenced
        tail: c.uint32_t
        done: c.bits(c.uint8_t, 1)     # uint8_t done : 1;
        name: c.char[32]               # NUL-terminated string buffer
        samples: c.uint16_t[8]

The names are the C names (``c.int`` is C ``int``, ``c.bool`` is C ``_Bool``,
``c.float`` is C ``float``). C ``unsigned int`` is spelled ``c.unsigned_int``
(or ``c.unsigned``); likewise ``c.unsigned_short``, ``c.unsigned_long``.

Indexing makes arrays and reads like C: ``c.uint8_t[4][8]`` (or
``c.uint8_t[4, 8]``) declares ``uint8_t x[4][8]``, that is 4 rows of 8.
A Struct subclass can be indexed the same way (``Point[4]``).

For type checkers the scalar names are plain aliases (``c.uint32_t`` is
``int``, ``c.double`` is ``float``, ``c.bool`` is ``bool``, ``c.char`` is
``bytes``, ``c.pointer`` is ``int``), so ``tail: c.uint32_t`` checks as an int.
Arrays, bit-fields and nested structs are not valid *type* expressions; use
``typing.Annotated`` for those when you run mypy::

    samples: Annotated[Sequence[int], c.uint16_t[8]]
    done: Annotated[int, c.bits(c.uint8_t, 1)]
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, Final

from .errors import DeclarationError

__all__ = [
    "Array",
    "Bits",
    "FieldType",
    "Scalar",
    "array",
    "bits",
    "bool",
    "char",
    "declare",
    "double",
    "float",
    "int",
    "int8_t",
    "int16_t",
    "int32_t",
    "int64_t",
    "intptr_t",
    "is_field_type",
    "long",
    "pointer",
    "short",
    "size_t",
    "ssize_t",
    "uint8_t",
    "uint16_t",
    "uint32_t",
    "uint64_t",
    "uintptr_t",
    "unsigned",
    "unsigned_int",
    "unsigned_long",
    "unsigned_short",
]

# This module shadows the builtins int/float/bool at the end; code below that
# runs after import uses these private names instead.
_pyint: Final = builtins.int
_pystr: Final = builtins.str
_pytuple: Final = builtins.tuple

#: C integer types and their width in bits (LP64 and ILP32 agree on these,
#: except long/size_t/pointers, whose width comes from the platform).
_INT_BITS: Final[dict[str, builtins.int]] = {
    "int8_t": 8,
    "int16_t": 16,
    "int32_t": 32,
    "int64_t": 64,
    "uint8_t": 8,
    "uint16_t": 16,
    "uint32_t": 32,
    "uint64_t": 64,
    "int": 32,
    "unsigned int": 32,
    "short": 16,
    "unsigned short": 16,
}


def _platform_bits(c_type: str) -> builtins.int:
    import ctypes

    size = {
        "long": ctypes.c_long,
        "unsigned long": ctypes.c_ulong,
        "size_t": ctypes.c_size_t,
        "ssize_t": ctypes.c_ssize_t,
        "intptr_t": ctypes.c_ssize_t,
        "uintptr_t": ctypes.c_size_t,
    }[c_type]
    return 8 * ctypes.sizeof(size)


class FieldType:
    """Base of the C field types; index it to make an array type."""

    __slots__ = ()

    def declare(self, name: str) -> str:
        """The C declaration of a member called ``name`` (without the ``;``)."""
        raise NotImplementedError

    def __getitem__(self, dims: Any) -> Array:
        return array(self, dims)

    def __repr__(self) -> str:
        return f"<C type {self.declare('').strip()}>"


class Scalar(FieldType):
    """A C scalar type: an integer, floating point, ``_Bool``, ``char`` or ``void *``.

    ``kind`` is one of ``"int"``, ``"float"``, ``"bool"``, ``"char"``, ``"pointer"``.
    """

    __slots__ = ("bit_width", "c_type", "kind")

    def __init__(self, c_type: str, kind: str, bit_width: builtins.int | None = None) -> None:
        self.c_type = c_type
        self.kind = kind
        self.bit_width = bit_width

    def declare(self, name: str) -> str:
        if self.kind == "pointer":
            return f"{self.c_type} *{name}"
        return f"{self.c_type} {name}"


class Bits(FieldType):
    """A bit-field: ``width`` bits of the integer type ``base``. Made by :func:`bits`."""

    __slots__ = ("base", "width")

    def __init__(self, base: Scalar, width: builtins.int) -> None:
        self.base = base
        self.width = width

    def declare(self, name: str) -> str:
        return f"{self.base.c_type} {name} : {self.width}"

    def __getitem__(self, dims: Any) -> Array:
        raise DeclarationError("C has no arrays of bit-fields")


class Array(FieldType):
    """A C array of ``length`` elements of ``element``.

    ``element`` is a :class:`FieldType` or a ``lws.session.Struct`` subclass.
    """

    __slots__ = ("element", "length")

    def __init__(self, element: Any, length: builtins.int) -> None:
        self.element = element
        self.length = length

    def declare(self, name: str) -> str:
        return declare(self.element, f"{name}[{self.length}]")

    def __getitem__(self, dims: Any) -> Array:
        # C reading order: T[a][b] is a rows of b, so a new dimension goes
        # innermost, next to the element type.
        if isinstance(dims, _pytuple):
            result: Array = self
            for d in dims:
                result = result[d]
            return result
        return Array(array(self.element, dims), self.length)


def is_field_type(obj: object) -> builtins.bool:
    """True for the objects that may appear as a field's C type."""
    if isinstance(obj, FieldType):
        return True
    return (
        isinstance(obj, type)
        and isinstance(getattr(obj, "c_name", None), _pystr)
        and (getattr(obj, "size", None) is not None)
    )


def declare(element: Any, declarator: str) -> str:
    """The C declaration of a member ``declarator`` of type ``element`` (no ``;``)."""
    if isinstance(element, FieldType):
        return element.declare(declarator)
    c_name = getattr(element, "c_name", None)
    if not isinstance(c_name, _pystr):
        raise DeclarationError(f"{element!r} is not a C field type")
    return f"{c_name} {declarator}"


def array(element: Any, dims: Any) -> Array:
    """``element[dims]``: an array of a field type or of a Struct subclass."""
    if isinstance(dims, _pytuple):
        if not dims:
            raise DeclarationError("an array type needs at least one length")
        result = array(element, dims[0])
        for d in dims[1:]:
            result = result[d]
        return result
    if isinstance(element, Bits):
        raise DeclarationError("C has no arrays of bit-fields")
    if type(dims) is not _pyint:
        raise DeclarationError(f"an array length must be an int, not {type(dims).__name__}")
    if dims < 1:
        raise DeclarationError(f"an array length must be at least 1, not {dims}")
    return Array(element, dims)


def bits(base: Any, width: builtins.int) -> Any:
    """A bit-field of ``width`` bits of the integer type ``base``: ``bits(c.uint8_t, 1)``."""
    if not isinstance(base, Scalar) or base.kind != "int" or base.bit_width is None:
        raise DeclarationError(f"a bit-field's base must be a C integer type, not {base!r}")
    if type(width) is not _pyint:
        raise DeclarationError(f"a bit-field width must be an int, not {type(width).__name__}")
    if not 1 <= width <= base.bit_width:
        raise DeclarationError(
            f"a {base.c_type} bit-field must be 1 to {base.bit_width} bits wide, not {width}"
        )
    return Bits(base, width)


def _int_type(c_type: str) -> Scalar:
    width = _INT_BITS[c_type] if c_type in _INT_BITS else _platform_bits(c_type)
    return Scalar(c_type, "int", width)


if TYPE_CHECKING:
    int8_t = builtins.int
    int16_t = builtins.int
    int32_t = builtins.int
    int64_t = builtins.int
    uint8_t = builtins.int
    uint16_t = builtins.int
    uint32_t = builtins.int
    uint64_t = builtins.int
    int = builtins.int
    unsigned_int = builtins.int
    unsigned = builtins.int
    short = builtins.int
    unsigned_short = builtins.int
    long = builtins.int
    unsigned_long = builtins.int
    size_t = builtins.int
    ssize_t = builtins.int
    intptr_t = builtins.int
    uintptr_t = builtins.int
    float = builtins.float
    double = builtins.float
    bool = builtins.bool
    char = builtins.bytes
    pointer = builtins.int
else:
    int8_t = _int_type("int8_t")
    int16_t = _int_type("int16_t")
    int32_t = _int_type("int32_t")
    int64_t = _int_type("int64_t")
    uint8_t = _int_type("uint8_t")
    uint16_t = _int_type("uint16_t")
    uint32_t = _int_type("uint32_t")
    uint64_t = _int_type("uint64_t")
    int = _int_type("int")
    unsigned_int = _int_type("unsigned int")
    unsigned = unsigned_int
    short = _int_type("short")
    unsigned_short = _int_type("unsigned short")
    long = _int_type("long")
    unsigned_long = _int_type("unsigned long")
    size_t = _int_type("size_t")
    ssize_t = _int_type("ssize_t")
    intptr_t = _int_type("intptr_t")
    uintptr_t = _int_type("uintptr_t")
    float = Scalar("float", "float")
    double = Scalar("double", "float")
    bool = Scalar("_Bool", "bool")
    char = Scalar("char", "char")
    pointer = Scalar("void", "pointer")
