"""Read and validate a safetensors header without touching the tensor data.

Layout: 8-byte little-endian ``N``, ``N`` bytes of UTF-8 JSON, then the tensor bytes.
The rules follow the reference Rust implementation (``safetensors`` 0.8), but are
stricter in a few places where the library is lenient: duplicate JSON keys, unknown
fields in a tensor entry, and non-string ``dtype`` / non-object tensor entries (which
serde happens to accept) are all rejected as corrupt.

Decoding: msgspec's JSON decoder (C) decodes a header several times faster than ``json``
with the hooks the rules need, but it keeps the last of duplicate keys and reads ``-0`` as the
integer 0. So it is the fast path only for text without ``\\u`` escapes and without negative
numbers, and its result stands only when the header validates and the count of ``:`` in the
text proves that no key was dropped; anything else is decided by the exact ``json`` path, which
also words every error. Both paths accept exactly the same headers.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import stat
from typing import Any, NamedTuple, NoReturn

import msgspec

MAX_HEADER_BYTES = 100_000_000
_U64_MAX = 2**64 - 1
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 24  # bounded preads: a wrong file_size can't make us allocate N bytes up front

# Element size in bits of every dtype safetensors 0.8 knows (F4 / F6 pack sub-byte).
DTYPE_BITS: dict[str, int] = {
    "F4": 4,
    **dict.fromkeys(("F6_E2M3", "F6_E3M2"), 6),
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 8),
    **dict.fromkeys(("F8_E4M3FNUZ", "F8_E5M2FNUZ"), 8),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 16),
    **dict.fromkeys(("I32", "U32", "F32"), 32),
    **dict.fromkeys(("C64", "F64", "I64", "U64"), 64),
}


class HeaderError(Exception):
    """The file is not a valid safetensors file; ``status`` says how."""

    status: str  # "truncated" | "corrupt" | "unsupported"

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


# Named tuples, not frozen dataclasses: a frozen dataclass's __init__ sets each field through
# object.__setattr__, which cost more than the JSON decoding of a whole header.
class TensorEntry(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offset relative to the start of the data section
    end: int


class Header(NamedTuple):
    header_len: int
    tensors: tuple[TensorEntry, ...]  # sorted by start offset
    metadata: dict[str, str]
    data_bytes: int

    @property
    def total_bytes(self) -> int:
        """The exact size a complete file with this header has."""
        return 8 + self.header_len + self.data_bytes

    @property
    def parameter_count(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)


def _corrupt(message: str) -> NoReturn:
    raise HeaderError("corrupt", message)


def _q(name: str) -> str:
    """A short quoted name for messages (names can be megabytes long)."""
    return repr(name if len(name) <= 60 else name[:57] + "...")


def _check_str(s: str) -> str:
    try:
        s.encode("utf-8")  # lone surrogates from \ud800 escapes; serde_json rejects them
    except UnicodeEncodeError:
        _corrupt("invalid unicode escape in header")
    return s


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            _corrupt(f"duplicate key {_q(key)} in header")
        if isinstance(value, str):
            _check_str(value)
        out[_check_str(key)] = value
    return out


def _fast_pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Duplicate keys only: text without a backslash-u escape cannot hold a lone surrogate."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _corrupt(f"duplicate key {_q(key)} in header")
            seen.add(key)
    return out


def _reject_constant(name: str) -> NoReturn:
    _corrupt(f"non-standard JSON constant {name} in header")


def _parse_int(text: str) -> int | float:
    # serde_json reads "-0" and any negative number as a float or i64; a usize then rejects it.
    return float(text) if text.startswith("-") else int(text)


def _is_u64(value: object) -> bool:
    return type(value) is int and 0 <= value <= _U64_MAX


def _nbytes(name: str, dtype: str, shape: tuple[int, ...]) -> int:
    """Byte size of a tensor, with the library's u64 overflow checks at every step."""
    count = math.prod(shape)
    # Dims >= 1 never shrink the running product, so only a product past u64 or a zero among
    # several dims (an earlier partial product may have overflowed) needs the step-wise check.
    if count > _U64_MAX or (count == 0 and len(shape) > 1):
        count = 1
        for dim in shape:
            count *= dim
            if count > _U64_MAX:
                _corrupt(f"tensor {_q(name)}: shape overflows")
    bits = count * DTYPE_BITS[dtype]
    if bits > _U64_MAX:
        _corrupt(f"tensor {_q(name)}: size overflows")
    if bits % 8:
        _corrupt(f"tensor {_q(name)}: {dtype} data is not a whole number of bytes")
    return bits // 8


def _all_u64(values: list[object]) -> bool:
    for v in values:  # noqa: SIM110 - a plain loop is faster; runs per tensor of every file
        if type(v) is not int or v < 0 or v > _U64_MAX:
            return False
    return True


def _metadata(raw: object) -> dict[str, str]:
    if raw is None:  # the library reads null as "no metadata"
        return {}
    if not isinstance(raw, dict):
        _corrupt("__metadata__ is not an object of strings")
    for v in raw.values():
        if not isinstance(v, str):
            _corrupt("__metadata__ is not an object of strings")
    return raw  # a dict the decoder just built: nobody else holds it


# Decoders built once (json.loads with hooks builds one per call), keyed by
# (text has a \\u escape, text has a minus sign).
_DECODERS = {
    (escapes, minus): json.JSONDecoder(
        object_pairs_hook=_pairs_hook if escapes else _fast_pairs_hook,
        parse_constant=_reject_constant,
        parse_int=_parse_int if minus else None,
    )
    for escapes in (False, True)
    for minus in (False, True)
}


_fast_decode = msgspec.json.Decoder().decode
# A number token follows "[", "," or ":" (or starts the text); a minus there is a negative
# number, which msgspec and serde read differently ("-0"). Strings can match too: then the
# exact path decides, which is only slower.
_NEGATIVE_NUMBER = re.compile(r"(?:^|[\[,:])[ \t\n\r]*-")


def parse_header(prefix: bytes, file_size: int, *, max_header: int = MAX_HEADER_BYTES) -> Header:
    """Validate a header from the file's first ``8 + N`` (or more) bytes and its size."""
    if file_size < 8 or len(prefix) < 8:
        raise HeaderError("truncated", "file is shorter than the 8-byte header length")
    n = int.from_bytes(prefix[:8], "little")
    if n > max_header:
        _corrupt(f"header length {n} exceeds the {max_header}-byte limit")
    if 8 + n > file_size or 8 + n > len(prefix):
        raise HeaderError("truncated", f"header length {n} runs past the end of the file")
    try:
        text = prefix[8 : 8 + n].decode("utf-8")
    except UnicodeDecodeError:
        _corrupt("header is not valid UTF-8")
    if "\\u" not in text and ("-" not in text or _NEGATIVE_NUMBER.search(text) is None):
        header = _parse_fast(n, text, file_size)
        if header is not None:
            return header
    try:
        # The slow hooks only where they can matter: escapes (lone surrogates) and minus
        # signs ("-0" is a float to serde); most headers have neither.
        raw = _DECODERS["\\u" in text, "-" in text].decode(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, nesting
        raise HeaderError("corrupt", f"header is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        _corrupt("header JSON is not an object")
    return _validate(n, raw, file_size)


def _parse_fast(n: int, text: str, file_size: int) -> Header | None:
    """The header when msgspec's decoding of ``text`` (no escapes, no negative numbers) is
    valid and provably lost no duplicate key; None when only the exact path can tell."""
    try:
        raw = _fast_decode(text)
    except (msgspec.DecodeError, RecursionError):  # ValidationError: ints past its range
        return None
    if type(raw) is not dict:
        return None
    keys = len(raw)
    try:
        header = _validate(n, raw, file_size)
    except HeaderError:
        return None
    # Without \\u escapes, every ":" of the text is a key's or inside a string. A valid
    # header's keys are its top-level ones, three per tensor and the metadata's; the strings
    # with a ":" can only be tensor names and metadata (dtypes and field names have none).
    # Fewer keys decoded than the text has means a duplicate was dropped.
    meta = header.metadata
    keys += 3 * len(header.tensors) + len(meta)
    colons = text.count(":")
    if colons != keys:
        in_strings = "".join(t.name for t in header.tensors).count(":")
        if meta:
            in_strings += "".join(meta).count(":") + "".join(meta.values()).count(":")
        if colons != keys + in_strings:
            return None
    return header


_OFFSET_ORDER = operator.attrgetter("start", "end", "name")
# A named tuple's generated __new__ is a Python-level wrapper around tuple.__new__.
_tuple_new = tuple.__new__


def _validate(n: int, raw: dict[str, Any], file_size: int) -> Header:
    """The rules after decoding (``raw`` is consumed). Checks run in a fixed order, so a header
    with several problems always gets the same verdict: metadata, then every entry's shape
    (corrupt), then dtypes (unsupported), then offsets in data order (corrupt), then size."""
    metadata = _metadata(raw.pop("__metadata__", None))
    entries: list[TensorEntry] = []
    unknown_dtype = False
    for name, info in raw.items():  # one loop, no call per entry: this runs for every file
        if type(info) is not dict or info.keys() != _ENTRY_KEYS:
            _corrupt(f"tensor {_q(name)}: expected an object with dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if type(dtype) is not str:
            _corrupt(f"tensor {_q(name)}: dtype is not a string")
        if type(shape) is not list or not _all_u64(shape):
            _corrupt(f"tensor {_q(name)}: shape is not a list of non-negative integers")
        if type(offsets) is not list or len(offsets) != 2:
            _corrupt(f"tensor {_q(name)}: data_offsets is not [begin, end]")
        start, end = offsets
        if (
            type(start) is not int
            or type(end) is not int
            or not 0 <= start <= _U64_MAX
            or not 0 <= end <= _U64_MAX
        ):
            _corrupt(f"tensor {_q(name)}: data_offsets is not [begin, end]")
        if start > end:
            _corrupt(f"tensor {_q(name)}: data_offsets end before they begin")
        if dtype not in DTYPE_BITS:
            unknown_dtype = True
        entries.append(_tuple_new(TensorEntry, (name, dtype, tuple(shape), start, end)))
    if unknown_dtype:
        e = next(e for e in entries if e.dtype not in DTYPE_BITS)
        raise HeaderError("unsupported", f"tensor {_q(e.name)}: unknown dtype {_q(e.dtype)}")
    entries.sort(key=_OFFSET_ORDER)
    cursor = 0
    for e in entries:
        if e.start != cursor:
            kind = "gap before" if e.start > cursor else "overlap at"
            _corrupt(f"{kind} tensor {_q(e.name)} in the data section")
        if e.end - e.start != _nbytes(e.name, e.dtype, e.shape):
            _corrupt(f"tensor {_q(e.name)}: data_offsets do not match {e.dtype} {list(e.shape)}")
        cursor = e.end
    total = 8 + n + cursor
    if total > file_size:
        raise HeaderError("truncated", f"file has {file_size} bytes, header promises {total}")
    if total < file_size:
        _corrupt(f"{file_size - total} unexpected bytes after the last tensor")
    return _tuple_new(Header, (n, tuple(entries), metadata, cursor))


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset``, looping on short reads; shorter only at EOF."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = os.pread(fd, min(size - got, _CHUNK), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_fd(fd: int, file_size: int | None, max_header: int) -> Header:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        _corrupt("not a regular file")
    size = st.st_size if file_size is None else file_size
    if size < 8:
        raise HeaderError("truncated", "file is shorter than the 8-byte header length")
    head = _pread_exact(fd, 8, 0)
    if len(head) < 8:
        raise HeaderError("truncated", "file is shorter than the 8-byte header length")
    n = int.from_bytes(head, "little")
    if n > max_header:
        _corrupt(f"header length {n} exceeds the {max_header}-byte limit")
    if 8 + n > size:
        raise HeaderError("truncated", f"header length {n} runs past the end of the file")
    body = _pread_exact(fd, n, 8)
    if len(body) < n:
        raise HeaderError("truncated", "file ended inside the header")
    return parse_header(head + body, size, max_header=max_header)


def read_header(
    fd_or_path: int | str | os.PathLike[str],
    *,
    file_size: int | None = None,
    max_header: int = MAX_HEADER_BYTES,
) -> Header:
    """Read and validate the header of an open fd (left open, offset untouched) or a path.

    Reads at most ``8 + N`` bytes and never the tensor data; ``OSError`` propagates.
    """
    if isinstance(fd_or_path, int):
        return _read_fd(fd_or_path, file_size, max_header)
    fd = os.open(fd_or_path, _OPEN_FLAGS)
    try:
        return _read_fd(fd, file_size, max_header)
    finally:
        os.close(fd)
