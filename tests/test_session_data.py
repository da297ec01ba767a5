"""Session data: declarations, layout (checked against a C compiler), views, guard.

No libwebsockets is needed: views are made over memory the tests allocate with
cffi, and over a Guard whose "lws thread" is set by hand.
"""

import __future__

import ctypes
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar

import cffi
import pytest

from lws import c
from lws._guard import Guard, LwsThread
from lws.errors import DeclarationError, SessionClosed
from lws.session import ArrayView, FieldInfo, Struct, assign, struct

# ---------------------------------------------------------------------------
# The same session data, as C text and as annotated classes
# ---------------------------------------------------------------------------

MINIMAL_C = """struct per_session_data__minimal { struct lws *wsi; uint32_t tail; uint8_t done:1; char name[32]; };"""  # noqa: E501

CHAT_C = """
/* nested first, as in C */
struct point {
    int32_t x;
    int32_t y;
};

struct chat {
    void *wsi;
    uint32_t tail;
    uint8_t done : 1;
    uint8_t level : 3;
    int8_t delta : 4;
    char name[32];
    uint16_t samples[8];
    struct point where;
    double ratio;
    float gain;
    _Bool ok;
    int8_t small;
    int64_t big;
    uint64_t ubig;
    struct point pts[3];
    char tags[2][8];
    uint8_t grid[2][3];
    char initial;
};
"""

# Non-bit-field members of struct chat, for offsetof().
CHAT_PLAIN = [
    "wsi", "name", "samples", "where", "ratio", "gain", "ok", "small", "big", "ubig",
    "pts", "tags", "grid", "initial", "tail",
]  # fmt: skip
MINIMAL_PLAIN = ["wsi", "tail", "name"]

HELPER_C = (
    r"""
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct lws;
"""
    + MINIMAL_C
    + CHAT_C
    + r"""

size_t sizeof_minimal(void) { return sizeof(struct per_session_data__minimal); }
size_t sizeof_point(void) { return sizeof(struct point); }
size_t sizeof_chat(void) { return sizeof(struct chat); }

#define OFF(s, f) if (!strcmp(name, #f)) return (long)offsetof(struct s, f);
long offset_minimal(const char *name) {
    OFF(per_session_data__minimal, wsi) OFF(per_session_data__minimal, tail)
    OFF(per_session_data__minimal, name)
    return -1;
}
long offset_chat(const char *name) {
    OFF(chat, wsi) OFF(chat, tail) OFF(chat, name) OFF(chat, samples) OFF(chat, where)
    OFF(chat, ratio) OFF(chat, gain) OFF(chat, ok) OFF(chat, small) OFF(chat, big)
    OFF(chat, ubig) OFF(chat, pts) OFF(chat, tags) OFF(chat, grid) OFF(chat, initial)
    return -1;
}

int minimal_describe(const struct per_session_data__minimal *p, char *out, size_t n) {
    return snprintf(out, n, "wsi=%lu tail=%u done=%u name=%s",
                    (unsigned long)(uintptr_t)p->wsi, (unsigned)p->tail, (unsigned)p->done,
                    p->name);
}

int chat_describe(const struct chat *p, char *out, size_t n) {
    return snprintf(out, n,
        "wsi=%lu tail=%u done=%u level=%u delta=%d name=%s "
        "samples=%u,%u,%u,%u,%u,%u,%u,%u where=%d,%d ratio=%.17g gain=%.9g ok=%d "
        "small=%d big=%lld ubig=%llu pts=%d,%d;%d,%d;%d,%d tags=%s,%s "
        "grid=%u,%u,%u;%u,%u,%u initial=%d",
        (unsigned long)(uintptr_t)p->wsi, (unsigned)p->tail, (unsigned)p->done,
        (unsigned)p->level, (int)p->delta, p->name,
        p->samples[0], p->samples[1], p->samples[2], p->samples[3],
        p->samples[4], p->samples[5], p->samples[6], p->samples[7],
        p->where.x, p->where.y, p->ratio, (double)p->gain, (int)p->ok,
        (int)p->small, (long long)p->big, (unsigned long long)p->ubig,
        p->pts[0].x, p->pts[0].y, p->pts[1].x, p->pts[1].y, p->pts[2].x, p->pts[2].y,
        p->tags[0], p->tags[1],
        p->grid[0][0], p->grid[0][1], p->grid[0][2], p->grid[1][0], p->grid[1][1],
        p->grid[1][2], (int)p->initial);
}

void chat_fill(struct chat *p) {
    memset(p, 0, sizeof *p);
    p->wsi = (void *)(uintptr_t)0x1234;
    p->tail = 4000000000u;
    p->done = 1;
    p->level = 5;
    p->delta = -3;
    strcpy(p->name, "from C");
    for (int i = 0; i < 8; i++) p->samples[i] = (uint16_t)(i * 1000);
    p->where.x = -7;
    p->where.y = 8;
    p->ratio = 0.1;
    p->gain = 1.5f;
    p->ok = 1;
    p->small = -128;
    p->big = INT64_MIN;
    p->ubig = UINT64_MAX;
    p->pts[2].y = 42;
    strcpy(p->tags[1], "seven77");
    p->grid[1][2] = 255;
    p->initial = 'Z';
}
"""
)


class Point(Struct, c_name="point"):
    x: c.int32_t
    y: c.int32_t


class Chat(Struct, c_name="chat"):
    wsi: c.pointer
    tail: c.uint32_t
    done: c.bits(c.uint8_t, 1)
    level: c.bits(c.uint8_t, 3)
    delta: c.bits(c.int8_t, 4)
    name: c.char[32]
    samples: c.uint16_t[8]
    where: Point
    ratio: c.double
    gain: c.float
    ok: c.bool
    small: c.int8_t
    big: c.int64_t
    ubig: c.uint64_t
    pts: Point[3]
    tags: c.char[2][8]
    grid: c.uint8_t[2][3]
    initial: c.char


ChatC = struct(CHAT_C)
Minimal = struct(MINIMAL_C)

ffi = cffi.FFI()


class Conn:
    """Stands in for lws.Connection: what a pointer field accepts."""

    def __init__(self, address: int) -> None:
        self.address = address

    def __lws_address__(self) -> int:
        return self.address


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


# Every buffer a test made stays allocated until the test is over, so that
# ``Session(Chat).view`` never leaves a view over memory the test freed.
_BUFFERS: list[Any] = []


@pytest.fixture(autouse=True)
def _keep_buffers() -> Iterator[None]:
    yield
    _BUFFERS.clear()


class Session:
    """A buffer the test owns, a guard, and a view over the buffer."""

    def __init__(self, cls: type[Struct], lws_thread: bool = True, label: str = "conn#7"):
        self.buf = ffi.new("char[]", cls.size)  # zeroed, like lws' buffer
        _BUFFERS.append(self.buf)
        self.address = int(ffi.cast("uintptr_t", self.buf))
        self.owner = LwsThread()
        self.owner.ident = threading.get_ident() if lws_thread else OTHER_THREAD
        self.guard = Guard(self.owner, label)
        self.view: Any = cls.view(self.address, self.guard)

    def raw(self) -> bytes:
        return bytes(ffi.buffer(self.buf))


def _parked_thread_ident() -> int:
    """The ident of a real thread that stays alive (parked) for the whole run.

    A finished thread's ident can be reused by the next thread started, which
    would then pass for the lws thread; a live one's cannot.
    """
    ready = threading.Event()
    idents: list[int] = []

    def park() -> None:
        idents.append(threading.get_ident())
        ready.set()
        threading.Event().wait()  # forever; daemon, so it never blocks exit

    threading.Thread(target=park, name="parked-lws-thread", daemon=True).start()
    assert ready.wait(10)
    return idents[0]


OTHER_THREAD = _parked_thread_ident()


@pytest.fixture(params=["lws-thread", "other-thread"])
def mode(request: pytest.FixtureRequest) -> bool:
    """True: the test thread is the lws thread (no lock); False: the locked path."""
    return bool(request.param == "lws-thread")


@pytest.fixture(scope="module")
def helper(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The C structs compiled by the C compiler, with sizeof/offsetof and readers."""
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "a C compiler (gcc or cc) is needed to check layouts against C"
    d = tmp_path_factory.mktemp("chelper")
    src = d / "helper.c"
    src.write_text(HELPER_C)
    lib_path = d / "libhelper.so"
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-O0", "-shared", "-fPIC", "-o", str(lib_path), str(src)],
        check=True,
        capture_output=True,
    )
    lib = ctypes.CDLL(str(lib_path))
    for fn in ("sizeof_minimal", "sizeof_point", "sizeof_chat"):
        getattr(lib, fn).restype = ctypes.c_size_t
    for fn in ("offset_minimal", "offset_chat"):
        getattr(lib, fn).restype = ctypes.c_long
        getattr(lib, fn).argtypes = [ctypes.c_char_p]
    for fn in ("minimal_describe", "chat_describe"):
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.chat_fill.argtypes = [ctypes.c_void_p]
    lib.chat_fill.restype = None
    return lib


def describe(helper: Any, fn: str, address: int) -> str:
    out = ctypes.create_string_buffer(1024)
    n = getattr(helper, fn)(address, out, len(out))
    assert 0 < n < len(out)
    return out.value.decode()


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


# ---------------------------------------------------------------------------
# Layout: both declaration styles agree with the C compiler
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Chat, ChatC], ids=["annotated", "pasted"])
def test_chat_layout_matches_c_compiler(helper: Any, cls: type[Struct]) -> None:
    assert cls.size == helper.sizeof_chat()
    for name in CHAT_PLAIN:
        assert cls.fields[name].offset == helper.offset_chat(name.encode()), name
    assert list(cls.fields) == list(Chat.fields)
    assert cls.c_name == "struct chat"


def test_minimal_layout_matches_c_compiler(helper: Any) -> None:
    assert Minimal.size == helper.sizeof_minimal()
    assert Minimal.c_name == "struct per_session_data__minimal"
    assert Minimal.__name__ == "per_session_data__minimal"
    for name in MINIMAL_PLAIN:
        assert Minimal.fields[name].offset == helper.offset_minimal(name.encode())
    assert Point.size == helper.sizeof_point()


def test_both_styles_describe_the_same_fields() -> None:
    for name, info in Chat.fields.items():
        other = ChatC.fields[name]
        assert isinstance(info, FieldInfo)
        assert (info.c_type, info.kind, info.offset, info.size, info.bit_width, info.length) == (
            other.c_type,
            other.kind,
            other.offset,
            other.size,
            other.bit_width,
            other.length,
        ), name
    assert Chat.fields["done"].c_type == "uint8_t:1"
    assert Chat.fields["done"].bit_width == 1
    assert Chat.fields["level"].bit_offset == 1
    assert Chat.fields["where"].struct is Point
    assert Chat.fields["pts"].struct is Point
    assert Chat.fields["pts"].length == 3
    assert Chat.fields["name"].kind == "string"
    assert Chat.fields["wsi"].kind == "pointer"
    assert ChatC.fields["where"].struct is not None
    assert ChatC.fields["where"].struct.c_name == "struct point"


def test_annotated_class_generates_readable_c() -> None:
    text = Chat.c_declaration
    assert text.startswith("struct point {\n    int32_t x;\n    int32_t y;\n};\n")
    for line in [
        "struct chat {",
        "    void *wsi;",
        "    uint8_t done : 1;",
        "    int8_t delta : 4;",
        "    char name[32];",
        "    struct point where;",
        "    _Bool ok;",
        "    struct point pts[3];",
        "    char tags[2][8];",
        "    uint8_t grid[2][3];",
    ]:
        assert line in text.splitlines(), line
    # the generated text is itself a valid declaration, with the same layout
    again = struct(text)
    assert again.size == Chat.size
    assert {n: f.offset for n, f in again.fields.items()} == {
        n: f.offset for n, f in Chat.fields.items()
    }


def test_python_writes_are_what_c_reads(helper: Any, mode: bool) -> None:
    for cls in (Chat, ChatC):
        s = Session(cls, lws_thread=mode)
        v = s.view
        v.wsi = Conn(0xBEEF)
        v.tail = 4_000_000_000
        v.done = True
        v.level = 6
        v.delta = -8
        v.name = "héllo"
        v.samples = [1, 2, 3, 4, 5, 6, 7, 65535]
        v.where = {"x": -1, "y": 2}
        v.ratio = 0.1
        v.gain = 0.3
        v.ok = True
        v.small = -5
        v.big = -(2**63)
        v.ubig = 2**64 - 1
        v.pts[1] = {"x": 10, "y": 11}
        v.pts[2].y = -12
        v.tags = ["ab", b"cdefghi"]
        v.grid[1] = [7, 8, 9]
        v.grid[0][2] = 200
        v.initial = b"Q"
        assert describe(helper, "chat_describe", s.address) == (
            "wsi=48879 tail=4000000000 done=1 level=6 delta=-8 name=héllo "
            "samples=1,2,3,4,5,6,7,65535 where=-1,2 ratio=0.10000000000000001 "
            "gain=0.300000012 ok=1 small=-5 big=-9223372036854775808 "
            "ubig=18446744073709551615 pts=0,0;10,11;0,-12 tags=ab,cdefghi "
            "grid=0,0,200;7,8,9 initial=81"
        )


def test_minimal_writes_are_what_c_reads(helper: Any) -> None:
    s = Session(Minimal)
    s.view.wsi = Conn(77)
    s.view.tail = 123
    s.view.done = 1
    s.view.name = b"client"
    assert describe(helper, "minimal_describe", s.address) == "wsi=77 tail=123 done=1 name=client"
    s.view.wsi = None
    s.view.done = 0
    assert describe(helper, "minimal_describe", s.address) == "wsi=0 tail=123 done=0 name=client"


@pytest.mark.parametrize("cls", [Chat, ChatC], ids=["annotated", "pasted"])
def test_python_reads_what_c_wrote(helper: Any, cls: type[Struct], mode: bool) -> None:
    s = Session(cls, lws_thread=mode)
    helper.chat_fill(s.address)
    v = s.view
    assert v.wsi == 0x1234
    assert v.tail == 4_000_000_000
    assert (v.done, v.level, v.delta) == (1, 5, -3)
    assert v.name == b"from C"
    assert v.samples.tolist() == [i * 1000 for i in range(8)]
    assert (v.where.x, v.where.y) == (-7, 8)
    assert v.ratio == 0.1
    assert v.gain == 1.5
    assert v.ok is True
    assert v.small == -128
    assert v.big == -(2**63)
    assert v.ubig == 2**64 - 1
    assert v.pts[2].y == 42
    assert v.tags[1] == b"seven77"
    assert v.tags[0] == b""
    assert v.grid[1][2] == 255
    assert v.initial == b"Z"
    snapshot = v.to_dict()
    assert snapshot["where"] == {"x": -7, "y": 8}
    assert snapshot["pts"] == [{"x": 0, "y": 0}, {"x": 0, "y": 0}, {"x": 0, "y": 42}]
    assert snapshot["tags"] == [b"", b"seven77"]
    assert snapshot["grid"] == [[0, 0, 0], [0, 0, 255]]


# ---------------------------------------------------------------------------
# Field kinds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "lo", "hi"),
    [
        ("small", -128, 127),
        ("tail", 0, 2**32 - 1),
        ("big", -(2**63), 2**63 - 1),
        ("ubig", 0, 2**64 - 1),
        ("done", 0, 1),
        ("level", 0, 7),
        ("delta", -8, 7),
    ],
)
def test_integer_fields_round_trip_their_whole_range(
    field: str, lo: int, hi: int, mode: bool
) -> None:
    v = Session(Chat, lws_thread=mode).view
    for value in (lo, hi, (lo + hi) // 2):
        setattr(v, field, value)
        got = getattr(v, field)
        assert got == value
        assert type(got) is int


class Index:
    def __index__(self) -> int:
        return 9


def test_int_fields_accept_index_objects_and_bools() -> None:
    v = Session(Chat).view
    v.tail = Index()
    assert v.tail == 9
    v.tail = True
    assert v.tail == 1


def test_bool_field(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    assert v.ok is False
    v.ok = True
    assert v.ok is True
    v.ok = 0
    assert v.ok is False
    v.ok = 1
    assert v.ok is True


def test_float_fields(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    v.ratio = 1e300
    assert v.ratio == 1e300
    v.ratio = 3  # ints are accepted
    assert v.ratio == 3.0 and type(v.ratio) is float
    v.gain = 0.1
    assert v.gain == pytest.approx(0.1, rel=1e-7) and v.gain != 0.1  # really a C float
    v.gain = math.inf
    assert v.gain == math.inf
    v.gain = math.nan
    assert math.isnan(v.gain)


def test_char_and_string_fields(mode: bool) -> None:
    s = Session(Chat, lws_thread=mode)
    v = s.view
    off = Chat.fields["name"].offset
    v.name = b"x" * 31  # exactly fits with its NUL
    assert v.name == b"x" * 31
    v.name = "ab"
    assert v.name == b"ab"
    # the rest of the array is zero-filled, so C sees a terminated string
    assert s.raw()[off : off + 32] == b"ab" + b"\0" * 30
    v.name = ""
    assert v.name == b""
    v.name = bytearray(b"ba")
    assert v.name == b"ba"
    v.name = "€"  # UTF-8, 3 bytes
    assert v.name == "€".encode()
    v.initial = b"A"
    assert v.initial == b"A"


def test_pointer_fields(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    assert v.wsi == 0
    v.wsi = Conn(0xDEADBEEF)
    assert v.wsi == 0xDEADBEEF
    v.wsi = 0
    assert v.wsi == 0
    v.wsi = Conn(5)
    v.wsi = None
    assert v.wsi == 0
    m = Session(Minimal, lws_thread=mode).view
    m.wsi = Conn(0x10)
    assert m.wsi == 0x10


def test_array_view(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    arr = v.samples
    assert isinstance(arr, ArrayView)
    assert len(arr) == 8
    v.samples = range(8)
    assert arr.tolist() == list(range(8))
    assert arr[0] == 0 and arr[7] == 7 and arr[-1] == 7 and arr[-8] == 0
    arr[-2] = 600
    assert arr[6] == 600
    assert list(arr) == [0, 1, 2, 3, 4, 5, 600, 7]
    assert arr[2:5] == [2, 3, 4]
    assert arr[::-3] == [7, 4, 1]
    assert 600 in arr and arr.index(600) == 6 and arr.count(3) == 1
    assert list(reversed(arr)) == [7, 600, 5, 4, 3, 2, 1, 0]
    for bad in (8, -9, 100):
        with pytest.raises(IndexError, match=r"Chat\.samples index"):
            arr[bad]
        with pytest.raises(IndexError):
            arr[bad] = 1
    with pytest.raises(TypeError):
        arr["1"]
    with pytest.raises(TypeError, match="slice assignment"):
        arr[0:2] = [1, 2]
    # the view is live: it sees later writes
    v.samples = [9] * 8
    assert arr[3] == 9
    v.samples = bytes(range(8))  # any iterable of the right length
    assert arr.tolist() == list(range(8))
    v.samples = arr  # from another array view (same values)
    assert arr.tolist() == list(range(8))
    assert arr == arr and arr != v.samples  # identity


def test_nested_struct_and_arrays_of_structs(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    where = v.where
    assert isinstance(where, Point)
    where.x = 5
    assert v.where.x == 5
    v.where = {"y": 3}  # like a C initializer: what is not given is zero
    assert (where.x, where.y) == (0, 3)
    other = Session(Chat).view
    other.where = {"x": 40, "y": 41}
    v.where = other.where  # from a view of the same type (another buffer)
    assert where.to_dict() == {"x": 40, "y": 41}
    pts = v.pts
    assert len(pts) == 3
    pts[0] = where
    pts[2] = {"x": 1, "y": 2}
    assert [p.to_dict() for p in pts] == [{"x": 40, "y": 41}, {"x": 0, "y": 0}, {"x": 1, "y": 2}]
    v.pts = [{"x": 7}, other.where, {}]
    assert pts.tolist() == [{"x": 7, "y": 0}, {"x": 40, "y": 41}, {"x": 0, "y": 0}]
    assert isinstance(pts[1], Point)
    tail = pts[1:]
    assert len(tail) == 2 and all(isinstance(p, Point) for p in tail)
    assert [p.to_dict() for p in tail] == pts.tolist()[1:]


def test_multi_dimensional_arrays(mode: bool) -> None:
    v = Session(Chat, lws_thread=mode).view
    grid = v.grid
    assert len(grid) == 2 and len(grid[0]) == 3
    v.grid = [[1, 2, 3], [4, 5, 6]]
    assert grid.tolist() == [[1, 2, 3], [4, 5, 6]]
    grid[1][0] = 40
    assert grid[1].tolist() == [40, 5, 6]
    grid[0] = (7, 8, 9)
    assert grid.tolist() == [[7, 8, 9], [40, 5, 6]]
    tags = v.tags
    tags[0] = "one"
    assert tags.tolist() == [b"one", b""]
    assert c.uint8_t[2][3].declare("g") == "uint8_t g[2][3]"
    assert c.uint8_t[2, 3].declare("g") == "uint8_t g[2][3]"
    assert Point[4][2].declare("p") == "struct point p[4][2]"


def test_to_dict_is_a_plain_copy(helper: Any) -> None:
    s = Session(Chat)
    helper.chat_fill(s.address)
    snap = s.view.to_dict()
    assert list(snap) == list(Chat.fields)
    for value in walk(snap):
        assert not isinstance(value, ffi.CData)
        assert isinstance(value, (dict, list, int, float, bool, bytes))
    s.view.tail = 1
    assert snap["tail"] == 4_000_000_000  # a snapshot, not a view


def test_nothing_returned_is_cdata(helper: Any) -> None:
    s = Session(Chat)
    helper.chat_fill(s.address)
    v = s.view
    for name in Chat.fields:
        value = getattr(v, name)
        assert not isinstance(value, ffi.CData), name
        if isinstance(value, ArrayView):
            for item in value:
                assert not isinstance(item, ffi.CData)
    assert not any(isinstance(x, ffi.CData) for x in v.pts[0:3])


# ---------------------------------------------------------------------------
# Bad writes raise and leave the buffer as it was
# ---------------------------------------------------------------------------


BAD_WRITES: list[tuple[str, Any, type[Exception], str]] = [
    ("tail", 2**40, OverflowError, "Chat.tail: 1099511627776 does not fit uint32_t"),
    ("tail", -1, OverflowError, "does not fit uint32_t"),
    ("small", 128, OverflowError, "Chat.small: 128 does not fit int8_t"),
    ("ubig", 2**64, OverflowError, "does not fit uint64_t"),
    ("tail", 1.0, TypeError, "Chat.tail: expected an int for uint32_t, got float"),
    ("tail", "3", TypeError, "expected an int"),
    ("tail", None, TypeError, "expected an int"),
    ("done", 2, OverflowError, "Chat.done: 2 does not fit uint8_t:1 (range 0..1)"),
    ("delta", 8, OverflowError, "range -8..7"),
    ("delta", -9, OverflowError, "range -8..7"),
    ("ok", 2, OverflowError, "Chat.ok: 2 does not fit _Bool"),
    ("ok", 1.0, TypeError, "expected a bool"),
    ("ok", None, TypeError, "expected a bool"),
    ("ok", "yes", TypeError, "expected a bool"),
    ("ratio", "1.5", TypeError, "Chat.ratio: expected a float for double"),
    ("ratio", 10**400, OverflowError, "does not fit double"),
    ("gain", 1e39, OverflowError, "Chat.gain: 1e+39 does not fit float"),
    ("initial", b"ab", TypeError, "bytes of length 1"),
    ("initial", 65, TypeError, "bytes of length 1"),
    ("name", "x" * 32, ValueError, "Chat.name: 32 bytes do not fit char[32] (at most 31 bytes"),
    ("name", "é" * 16, ValueError, "at most 31 bytes"),
    ("name", b"a\0b", ValueError, "Chat.name: the value contains a NUL byte"),
    ("name", 5, TypeError, "expected bytes or str"),
    ("samples", [1, 2, 3], ValueError, "Chat.samples: expected 8 values for uint16_t[8], got 3"),
    ("samples", [0] * 9, ValueError, "got 9"),
    ("samples", [1, 2, 3, 4, 5, 6, 7, 65536], OverflowError, "Chat.samples[7]: 65536"),
    ("samples", [1, 2, 3, 4, 5, 6, 7, "8"], TypeError, "Chat.samples[7]: expected an int"),
    ("samples", "abcdefgh", TypeError, "expected a sequence"),
    ("samples", 5, TypeError, "expected a sequence"),
    ("where", {"x": 1, "z": 2}, ValueError, "Chat.where: Point has no field 'z'"),
    ("where", {"x": 1, "y": 2**31}, OverflowError, "Chat.where.y: 2147483648"),
    ("where", [1, 2], TypeError, "expected a Point view or a dict"),
    ("pts", [{}, {}, {"x": "no"}], TypeError, "Chat.pts[2].x: expected an int"),
    ("pts", [{}, {}], ValueError, "expected 3 values"),
    ("tags", ["ok", "much too long"], ValueError, "Chat.tags[1]: 13 bytes do not fit char[8]"),
    ("grid", [[1, 2, 3], [4, 5, 256]], OverflowError, "Chat.grid[1][2]: 256 does not fit uint8_t"),
    ("grid", [[1, 2, 3], [4, 5]], ValueError, "Chat.grid[1]: expected 3 values"),
    ("wsi", 5, TypeError, "Chat.wsi: a void * field only accepts None, 0 or a connection"),
    ("wsi", object(), TypeError, "only accepts None, 0 or a connection"),
    ("wsi", Conn(-1), TypeError, "__lws_address__() returned -1"),
    ("wsi", ffi.NULL, TypeError, "only accepts"),
]


@pytest.mark.parametrize(
    ("field", "value", "exc", "message"),
    BAD_WRITES,
    ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_WRITES)],
)
def test_bad_write_raises_and_changes_nothing(
    helper: Any, field: str, value: Any, exc: type[Exception], message: str, mode: bool
) -> None:
    s = Session(Chat, lws_thread=mode)
    helper.chat_fill(s.address)  # non-zero everywhere, so a partial write would show
    s.view.samples = [11, 12, 13, 14, 15, 16, 17, 18]
    before = s.raw()
    with pytest.raises(exc) as info:
        setattr(s.view, field, value)
    assert message in str(info.value)
    assert s.raw() == before


def test_bad_element_writes_change_nothing(helper: Any, mode: bool) -> None:
    s = Session(Chat, lws_thread=mode)
    helper.chat_fill(s.address)
    v = s.view
    before = s.raw()
    cases: list[tuple[Any, type[Exception]]] = [
        (lambda: v.samples.__setitem__(0, 70000), OverflowError),
        (lambda: v.samples.__setitem__(0, 1.5), TypeError),
        (lambda: v.pts.__setitem__(0, {"x": 1, "q": 1}), ValueError),
        (lambda: v.pts.__setitem__(0, {"x": 1, "y": 2**40}), OverflowError),
        (lambda: v.pts.__setitem__(0, [1, 2]), TypeError),
        (lambda: v.pts.__setitem__(0, Session(Minimal).view), TypeError),
        (lambda: v.tags.__setitem__(1, "123456789"), ValueError),
        (lambda: v.grid.__setitem__(1, [1, 2, 300]), OverflowError),
        (lambda: v.grid[0].__setitem__(1, -1), OverflowError),
        (lambda: setattr(v.where, "x", 2**31), OverflowError),
        (lambda: setattr(v, "nonexistent", 1), AttributeError),
        (lambda: setattr(v.where, "z", 1), AttributeError),
    ]
    for fn, exc in cases:
        with pytest.raises(exc):
            fn()
        assert s.raw() == before


def test_element_error_messages_name_the_element() -> None:
    v = Session(Chat).view
    with pytest.raises(OverflowError, match=r"Chat\.samples\[3\]: 70000 does not fit uint16_t"):
        v.samples[3] = 70000
    with pytest.raises(OverflowError, match=r"Point\.x: 2147483648 does not fit int32_t"):
        v.where.x = 2**31
    with pytest.raises(TypeError, match=r"Chat\.pts\[0\]: expected a Point view or a dict, got a "):
        v.pts[0] = Session(Minimal).view


def test_assign_replaces_the_whole_struct_or_nothing(mode: bool) -> None:
    s = Session(Chat, lws_thread=mode)
    v = s.view
    v.ubig = 99
    assign(v, {"tail": 5, "name": "n", "where": {"y": 1}, "samples": [1] * 8})
    snap = v.to_dict()
    assert (snap["tail"], snap["name"], snap["where"], snap["samples"]) == (
        5,
        b"n",
        {"x": 0, "y": 1},
        [1] * 8,
    )
    assert snap["ubig"] == 0  # not given: zero, like a C compound literal
    before = s.raw()
    with pytest.raises(OverflowError, match=r"Chat\.grid\[0\]\[0\]"):
        assign(v, {"tail": 6, "grid": [[256, 0, 0], [0, 0, 0]]})
    with pytest.raises(ValueError, match="has no field 'nope'"):
        assign(v, {"tail": 6, "nope": 1})
    assert s.raw() == before
    other = Session(Chat).view
    assign(other, v)
    assert other.to_dict() == v.to_dict()
    with pytest.raises(TypeError):
        assign(Session(Minimal).view, v)
    s.guard.kill("gone")
    with pytest.raises(SessionClosed):
        assign(v, {})


# ---------------------------------------------------------------------------
# The view object itself
# ---------------------------------------------------------------------------


def test_views_cannot_be_created_directly() -> None:
    with pytest.raises(TypeError, match="views are made by the binding"):
        Chat()
    with pytest.raises(TypeError, match="made by the session view"):
        ArrayView()
    with pytest.raises(TypeError):
        Struct.view(1, Guard(LwsThread(), "x"))


def test_view_arguments_are_checked() -> None:
    g = Guard(LwsThread(), "x")
    with pytest.raises(ValueError):
        Chat.view(0, g)
    with pytest.raises(TypeError):
        Chat.view("0x10", g)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Chat.view(4096, object())  # type: ignore[arg-type]


def test_views_have_fixed_attributes_and_identity_equality() -> None:
    s = Session(Chat)
    v = s.view
    with pytest.raises(AttributeError):
        v.extra = 1
    with pytest.raises(AttributeError):
        v.extra  # noqa: B018
    with pytest.raises(AttributeError):
        v.size = 3
    with pytest.raises(AttributeError):
        del v.tail
    assert not hasattr(v, "__dict__")
    twin = Chat.view(s.address, s.guard)
    assert v == v
    assert v != twin  # same memory, different view objects: identity equality
    assert len({v, twin}) == 2
    assert twin.tail == v.tail
    assert v.alive is True
    assert v.address == s.address
    assert v.where.address == s.address + Chat.fields["where"].offset
    assert v.samples.address == s.address + Chat.fields["samples"].offset


def test_repr() -> None:
    v = Session(Chat).view
    v.tail = 3
    v.name = "zed"
    text = repr(v)
    assert text.startswith("<Chat wsi=0 tail=3 ")
    assert "name=b'zed'" in text
    assert repr(v.where) == "<Point x=0 y=0>"
    assert repr(v.samples).startswith("<ArrayView Chat.samples uint16_t[8]: [0, 0")


def test_views_share_memory() -> None:
    s = Session(Chat)
    a = s.view
    b = Chat.view(s.address, s.guard)
    a.tail = 77
    assert b.tail == 77
    off = Chat.fields["tail"].offset
    assert int.from_bytes(s.raw()[off : off + 4], "little") == 77


# ---------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------


def test_struct_picks_last_or_named() -> None:
    text = """
    struct inner { uint8_t a; uint32_t b; };
    typedef struct { int16_t v[3]; } triple_t;
    struct outer { struct inner in; triple_t t; struct lws *wsi; };
    """
    outer = struct(text)
    assert outer.c_name == "struct outer"
    assert outer.size == 24
    inner = struct(text, name="inner")
    assert inner.c_name == "struct inner" and inner.size == 8
    assert struct(text, name="struct inner").size == 8
    triple = struct(text, name="triple_t")
    assert triple.c_name == "triple_t" and triple.size == 6
    s = Session(outer)
    s.view.t.v = [1, -2, 3]
    s.view.__getattribute__("in").b = 9  # a Python keyword as a C field name
    assert s.view.to_dict() == {"in": {"a": 0, "b": 9}, "t": {"v": [1, -2, 3]}, "wsi": 0}


def test_typedef_struct_and_inline_nested() -> None:
    t = struct("typedef struct { uint32_t n; char s[8]; } pss_t;")
    assert t.c_name == "pss_t" and t.__name__ == "pss_t" and t.size == 12
    nested = struct("struct b { struct a { int x; } a; int y; };")
    assert nested.c_name == "struct b" and nested.size == 8
    v = Session(nested).view
    v.a.x = 4
    assert v.to_dict() == {"a": {"x": 4}, "y": 0}


def test_defines_enums_and_function_pointers() -> None:
    t = struct(
        """
        #define NAME_LEN 16
        enum mode { IDLE, BUSY = 300 };
        struct s { char name[NAME_LEN]; enum mode mode; void (*cb)(int); };
        """
    )
    assert t.fields["name"].length == 16
    v = Session(t).view
    v.mode = 300
    assert v.mode == 300
    assert v.cb == 0
    v.cb = None
    with pytest.raises(TypeError, match="only accepts None or 0"):
        v.cb = Conn(1)


def test_annotated_with_typing_annotated_and_classvar() -> None:
    class Typed(Struct):
        count: Annotated[int, c.uint32_t]
        flags: Annotated[int, c.bits(c.uint16_t, 3)]
        history: Annotated[list[int], c.int16_t[4]]
        label: Annotated[bytes, c.char[8]]
        limit: ClassVar[int] = 10

        def bump(self) -> int:
            self.count += 1
            return int(self.count)

    assert list(Typed.fields) == ["count", "flags", "history", "label"]
    assert Typed.c_name == "struct Typed"
    v = Session(Typed).view
    assert v.bump() == 1 and v.bump() == 2
    assert Typed.limit == 10


def test_string_annotations_in_a_function_scope() -> None:
    source = """
def make():
    class Inner(Struct, c_name="inner_t"):
        a: c.uint8_t
    class Outer(Struct):
        i: Inner
        many: Inner[2]
        n: c.unsigned_int
    return Inner, Outer
"""
    namespace: dict[str, Any] = {"Struct": Struct, "c": c}
    exec(compile(source, "<test>", "exec", flags=__future__.annotations.compiler_flag), namespace)
    inner, outer = namespace["make"]()
    assert outer.fields["i"].struct is inner
    assert "struct inner_t i;" in outer.c_declaration
    assert "unsigned int n;" in outer.c_declaration
    v = Session(outer).view
    v.many[1].a = 255
    assert v.to_dict() == {"i": {"a": 0}, "many": [{"a": 0}, {"a": 255}], "n": 0}


def test_pasted_struct_nested_in_annotated_class() -> None:
    class Holder(Struct):
        m: Minimal
        n: c.int

    assert "struct per_session_data__minimal" in Holder.c_declaration
    assert Holder.size == Minimal.size + 8  # 48 + int, padded to 8
    v = Session(Holder).view
    v.m.tail = 5
    v.m = {"tail": 6, "name": "n"}
    assert v.m.to_dict() == {"wsi": 0, "tail": 6, "done": 0, "name": b"n"}
    assert isinstance(v.m, Minimal)


BAD_DECLARATIONS = [
    ("", "empty"),
    ("/* just a comment */", "empty"),
    ("struct a { int x; ", "cannot parse"),
    ("struct a { int x }", "cannot parse"),
    ("struct a { foo_t x; uint32_t y; };", "unknown type name(s) 'foo_t'"),
    ("struct a { int x; ...; };", "partial structs"),
    ("union u { int a; float b; };", "unions are not supported"),
    ("struct a { int x; union { int c; float d; }; };", "unions are not supported"),
    ("struct a {};", "has no fields"),
    ("struct a;", "no struct definition found"),
    ("int f(int);", "no struct definition found"),
    ("struct a { int n; char data[]; };", "flexible array"),
    ("struct a { int x[0]; };", "zero-length"),
    ("struct a { int x:0; };", "struct a"),
    ("struct a { uint8_t x:9; };", "exceeds the width"),
    ("struct a { int x; int x; };", "duplicate field name 'x'"),
    ("struct a { struct undefined u; };", "unknown size"),
    ("struct a { long double x; };", "long double"),
    ("struct a { wchar_t w; };", "wchar_t"),
    ("struct a { float _Complex z; };", "_Complex"),
    ("#include <stdio.h>\nstruct a { int x; };", "#define NAME <integer>"),
    ("struct a { int x __attribute__((packed)); };", "attributes"),
    ("struct a { int view; };", "taken by the view's own API"),
    ("struct a { int to_dict; };", "taken by the view's own API"),
    ("struct a { int _guard; };", "taken by the view's own API"),
    ("struct a { int x; }; struct a { int y; };", "duplicate declaration"),
]


@pytest.mark.parametrize(("text", "message"), BAD_DECLARATIONS)
def test_bad_c_declarations(text: str, message: str) -> None:
    with pytest.raises(DeclarationError) as info:
        struct(text)
    assert message in str(info.value)
    # no chained cffi/pycparser traceback under ours
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


def test_bad_struct_names() -> None:
    text = "struct a { int x; }; struct b { struct lws *w; };"
    with pytest.raises(
        DeclarationError, match=r"no struct named 'nope'.*defined: struct a, struct b"
    ):
        struct(text, name="nope")
    with pytest.raises(DeclarationError, match="only declared, not defined"):
        struct(text, name="lws")
    with pytest.raises(DeclarationError, match="is int, not a struct"):
        struct("typedef int myint; struct a { myint x; };", name="myint")
    with pytest.raises(DeclarationError):
        struct(b"struct a { int x; };")  # type: ignore[arg-type]


def _declare(body: str, **names: Any) -> None:
    namespace: dict[str, Any] = {"Struct": Struct, "c": c, "Annotated": Annotated, **names}
    exec(body, namespace)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("class X(Struct):\n    x: int", "is not a C field type"),
        ("class X(Struct):\n    pass", "declares no fields"),
        ("class X(Struct):\n    x: c.int = 5", "cannot have a value"),
        ("class X(Struct):\n    x: c.int\n    def x(self): pass", "share a name with a method"),
        ("class X(Struct):\n    view: c.int", "taken by the view's own API"),
        ("class X(Struct):\n    alive: c.bool", "taken by the view's own API"),
        ("class X(Struct):\n    size: c.int", "taken by the view's own API"),
        ("class X(Struct):\n    switch: c.int", "not a valid C identifier"),
        ("class X(Point):\n    z: c.int", "cannot subclass the declared struct Point"),
        ("class X(Struct):\n    x: c.bits(c.uint8_t, 9)", "1 to 8 bits wide"),
        ("class X(Struct):\n    x: c.bits(c.double, 1)", "C integer type"),
        ("class X(Struct):\n    x: c.bits(c.uint8_t, 1)[2]", "arrays of bit-fields"),
        ("class X(Struct):\n    x: c.uint8_t[0]", "at least 1"),
        ("class X(Struct):\n    x: c.uint8_t[2.0]", "must be an int"),
        ("class X(Struct):\n    x: Annotated[int, c.int, c.int]", "exactly one C type"),
        ("class X(Struct):\n    x: Annotated[int, 'uint32_t']", "exactly one C type"),
        ("class X(Struct):\n    x: Struct", "is not a C field type"),
        ("class X(Struct, c_name='not valid'):\n    x: c.int", "not a valid C struct name"),
        ("class X(Struct):\n    __slots__ = ('q',)\n    x: c.int", "__slots__"),
        ("class X(Struct):\n    x: 'Missing'", "cannot evaluate the annotation"),
        (
            "class A(Struct):\n    x: c.int\nclass B(Struct, c_name='A'):\n    a: A",
            "duplicate declaration",
        ),
    ],
)
def test_bad_annotated_classes(body: str, message: str) -> None:
    with pytest.raises(DeclarationError) as info:
        _declare(body, Point=Point)
    assert message in str(info.value)


def test_declaration_error_is_a_type_error() -> None:
    assert issubclass(DeclarationError, TypeError)
    with pytest.raises(TypeError):
        struct("struct a {};")


# ---------------------------------------------------------------------------
# Lifetime: after the guard is killed
# ---------------------------------------------------------------------------


def _every_access(v: Any, arr: Any, grid_row: Any, where: Any, pts: Any, pt: Any) -> list[Any]:
    accesses: list[Any] = []
    for name in Chat.fields:
        accesses.append(lambda name=name: getattr(v, name))
    sample_values = {
        "wsi": None, "tail": 1, "done": 1, "level": 1, "delta": 1, "name": "a",
        "samples": [0] * 8, "where": {}, "ratio": 1.0, "gain": 1.0, "ok": True, "small": 1,
        "big": 1, "ubig": 1, "pts": [{}, {}, {}], "tags": ["", ""], "grid": [[0] * 3] * 2,
        "initial": b"x",
    }  # fmt: skip
    assert set(sample_values) == set(Chat.fields)
    for name, value in sample_values.items():
        accesses.append(lambda name=name, value=value: setattr(v, name, value))
    accesses += [
        v.to_dict,
        lambda: len(arr),
        lambda: arr[0],
        lambda: arr[-1],
        lambda: arr[1:3],
        lambda: arr.__setitem__(0, 1),
        lambda: next(iter(arr)),
        arr.tolist,
        lambda: 5 in arr,
        lambda: grid_row[0],
        lambda: grid_row.__setitem__(0, 1),
        lambda: where.x,
        lambda: setattr(where, "y", 2),
        where.to_dict,
        lambda: pts[0],
        lambda: pts.__setitem__(1, {}),
        pts.tolist,
        lambda: pt.x,
        lambda: setattr(pt, "x", 1),
    ]
    return accesses


@pytest.mark.parametrize("kill_mode", ["lws-thread", "other-thread"])
def test_every_access_after_kill_raises_session_closed(kill_mode: str) -> None:
    s = Session(Chat, lws_thread=kill_mode == "lws-thread", label="conn#42")
    v = s.view
    arr, grid_row, where, pts, pt = v.samples, v.grid[1], v.where, v.pts, v.pts[2]
    accesses = _every_access(v, arr, grid_row, where, pts, pt)
    for fn in accesses:
        fn()  # all fine while alive
    s.guard.kill("connection closed")
    poisoned = b"\xa5" * Chat.size
    ffi.memmove(s.buf, poisoned, Chat.size)  # "freed": any touch would show
    for fn in accesses:
        with pytest.raises(SessionClosed) as info:
            fn()
        assert "conn#42" in str(info.value)
        assert "connection closed" in str(info.value)
        assert isinstance(info.value, ReferenceError)
    assert s.raw() == poisoned
    assert v.alive is False and arr.alive is False and where.alive is False
    assert v.address == s.address
    assert repr(v) == "<Chat (closed: connection closed)>"
    assert repr(where) == "<Point (closed: connection closed)>"
    assert repr(arr) == "<ArrayView Chat.samples uint16_t[8] (closed: connection closed)>"
    assert str(v) == repr(v)


def test_iteration_stops_with_session_closed_mid_way() -> None:
    s = Session(Chat)
    it = iter(s.view.samples)
    assert next(it) == 0
    s.guard.kill("gone")
    with pytest.raises(SessionClosed):
        next(it)


@pytest.mark.parametrize("lws_thread", [True, False])
def test_writes_to_a_dead_view_never_touch_memory(lws_thread: bool) -> None:
    s = Session(Chat, lws_thread=lws_thread)
    s.guard.kill("gone")
    ffi.memmove(s.buf, b"\x5a" * Chat.size, Chat.size)
    with pytest.raises(SessionClosed):
        s.view.tail = 2**40  # the range is checked by the write itself, which never happens
    with pytest.raises(SessionClosed):
        s.view.tail = 1
    with pytest.raises(SessionClosed):
        s.view.samples = [1] * 8
    with pytest.raises(TypeError):
        s.view.tail = 1.5  # a wrong type is refused before the guard is even consulted
    assert s.raw() == b"\x5a" * Chat.size


# ---------------------------------------------------------------------------
# Threads: the lock path, the lock-free lws path, and a kill racing a user
# ---------------------------------------------------------------------------


def test_other_threads_wait_for_the_lock_and_then_see_the_kill() -> None:
    s = Session(Chat, lws_thread=False)
    g = s.guard
    holding = threading.Event()
    release = threading.Event()

    def lws_side() -> None:  # holds the lock like kill() does, then kills inside it
        with g.lock:
            holding.set()
            release.wait(5)
            g.alive = False
            g.why = "killed while you waited"

    results: list[BaseException | int] = []

    def reader() -> None:
        try:
            results.append(s.view.tail)
        except BaseException as exc:
            results.append(exc)

    t1 = threading.Thread(target=lws_side)
    t1.start()
    assert holding.wait(5)
    t2 = threading.Thread(target=reader)
    t2.start()
    time.sleep(0.1)
    assert t2.is_alive() and not results  # blocked on the lock, not reading memory
    release.set()
    t1.join(5)
    t2.join(5)
    assert len(results) == 1 and isinstance(results[0], SessionClosed)
    assert "killed while you waited" in str(results[0])


def test_lws_thread_path_takes_no_lock() -> None:
    s = Session(Chat, lws_thread=True)
    s.guard.lock.acquire()  # if the hot path took the lock this would deadlock
    try:
        s.view.tail = 5
        assert s.view.tail == 5
        s.view.name = "x"
        assert s.view.samples[0] == 0
        assert s.view.to_dict()["tail"] == 5
    finally:
        s.guard.lock.release()


POISON = 0xA5A5A5A5


def _race_once(max_iterations: int = 200_000) -> tuple[str, int]:
    s = Session(Chat, lws_thread=True)  # this (main) thread plays the lws thread
    v = s.view
    arr, where = v.samples, v.where
    started = threading.Event()
    outcome: list[tuple[str, int]] = []

    def user_thread() -> None:  # not the lws thread: the locked path
        i = 0
        try:
            while i < max_iterations:
                i += 1
                v.tail = i
                got = v.tail
                if got == POISON:
                    outcome.append(("read freed memory", i))
                    return
                arr[i % 8] = i & 0xFFFF
                where.x = i
                if arr[i % 8] == 0xA5A5 or where.x == -0x5A5A5A5B:
                    outcome.append(("read freed memory", i))
                    return
                if i == 50:
                    started.set()
            outcome.append(("never closed", i))
        except SessionClosed as exc:
            ok = "conn#7" in str(exc) and "connection closed" in str(exc)
            outcome.append(("closed" if ok else f"bad message {exc}", i))
        except BaseException as exc:
            outcome.append((f"unexpected {type(exc).__name__}: {exc}", i))
        finally:
            started.set()

    t = threading.Thread(target=user_thread)
    t.start()
    assert started.wait(10)
    s.guard.kill("connection closed")
    ffi.memmove(s.buf, b"\xa5" * Chat.size, Chat.size)  # lws frees (and reuses) it
    t.join(10)
    assert not t.is_alive(), "the user thread did not stop"
    # nothing was written after the kill
    assert s.raw() == b"\xa5" * Chat.size
    return outcome[0]


def test_kill_racing_a_user_thread() -> None:
    results = [_race_once() for _ in range(200)]
    bad = [r for r in results if r[0] != "closed"]
    assert not bad, bad[:5]


# ---------------------------------------------------------------------------
# The lws.c type objects
# ---------------------------------------------------------------------------


def test_c_types_spell_c() -> None:
    assert c.uint32_t.declare("tail") == "uint32_t tail"
    assert c.int.declare("n") == "int n"
    assert c.unsigned_int.declare("n") == "unsigned int n"
    assert c.unsigned is c.unsigned_int
    assert c.size_t.declare("n") == "size_t n"
    assert c.bool.declare("ok") == "_Bool ok"
    assert c.float.declare("f") == "float f"
    assert c.double.declare("d") == "double d"
    assert c.pointer.declare("wsi") == "void *wsi"
    assert c.bits(c.uint8_t, 1).declare("done") == "uint8_t done : 1"
    assert c.char[32].declare("name") == "char name[32]"
    assert c.uint16_t[8].declare("s") == "uint16_t s[8]"
    assert repr(c.uint32_t) == "<C type uint32_t>"
    assert c.is_field_type(Point) and c.is_field_type(c.int) and not c.is_field_type(int)
    assert not c.is_field_type(Struct)
    with pytest.raises(TypeError):
        Struct[3]
