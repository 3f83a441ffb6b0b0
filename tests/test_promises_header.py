"""The header reader's verdicts, exactly: status *and* message for each malformation, read
through both doors (``parse_header`` on bytes, ``read_header`` on a real file), and the
boundaries of every limit. The details panel shows these messages to the user, so they are
behaviour; each case here kills mutants of ``ckpt_tui/safetensors_header.py`` that survived
the classification-only tests (mutation/report.md).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from ckpt_tui.safetensors_header import HeaderError, parse_header, read_header

U64 = 2**64 - 1


def _file(header: bytes | str | dict[str, object], data: bytes | int = b"") -> bytes:
    if isinstance(header, dict):
        header = json.dumps(header)
    raw = header.encode() if isinstance(header, str) else header
    body = data if isinstance(data, bytes) else b"\0" * data
    return struct.pack("<Q", len(raw)) + raw + body


def _t(
    dtype: str = "F32", shape: list[object] | None = None, offsets: list[object] | None = None
) -> dict[str, object]:
    return {
        "dtype": dtype,
        "shape": [2] if shape is None else shape,
        "data_offsets": [0, 8] if offsets is None else offsets,
    }


LONG = "w" * 61  # one past the 60 characters a name is shown in full
CASES: dict[str, tuple[bytes, str, str]] = {
    "short": (b"\x01\x00", "truncated", "file is shorter than the 8-byte header length"),
    "past-end": (
        struct.pack("<Q", 50) + b"{}",
        "truncated",
        "header length 50 runs past the end of the file",
    ),
    "not-utf8": (_file(b"\xff\xfe"), "corrupt", "header is not valid UTF-8"),
    "not-object": (_file("[1]"), "corrupt", "header JSON is not an object"),
    "duplicate": (_file('{"a": 1, "a": 2}'), "corrupt", "duplicate key 'a' in header"),
    "duplicate-escaped": (
        _file('{"\\u0061": 1, "a": 2}'),
        "corrupt",
        "duplicate key 'a' in header",
    ),
    "surrogate": (
        _file('{"__metadata__": {"k": "\\ud800"}}'),
        "corrupt",
        "invalid unicode escape in header",
    ),
    "nan": (_file('{"__metadata__": NaN}'), "corrupt", "non-standard JSON constant NaN in header"),
    "metadata-list": (
        _file({"__metadata__": []}),
        "corrupt",
        "__metadata__ is not an object of strings",
    ),
    "metadata-int": (
        _file({"__metadata__": {"k": 1}}),
        "corrupt",
        "__metadata__ is not an object of strings",
    ),
    "entry-not-object": (
        _file({"w": 3}),
        "corrupt",
        "tensor 'w': expected an object with dtype, shape, data_offsets",
    ),
    "dtype-int": (
        _file({"w": _t(dtype=7)}, 8),
        "corrupt",  # type: ignore[arg-type]
        "tensor 'w': dtype is not a string",
    ),
    "shape-negative": (
        _file({"w": _t(shape=[-1])}, 8),
        "corrupt",
        "tensor 'w': shape is not a list of non-negative integers",
    ),
    "shape-past-u64": (
        _file({"w": _t(shape=[U64 + 1])}, 8),
        "corrupt",
        "tensor 'w': shape is not a list of non-negative integers",
    ),
    "offsets-three": (
        _file({"w": _t(offsets=[0, 4, 8])}, 8),
        "corrupt",
        "tensor 'w': data_offsets is not [begin, end]",
    ),
    "offsets-negative": (
        _file({"w": _t(offsets=[-1, 8])}, 8),
        "corrupt",
        "tensor 'w': data_offsets is not [begin, end]",
    ),
    "offsets-past-u64": (
        _file({"w": _t(offsets=[0, U64 + 1])}, 8),
        "corrupt",
        "tensor 'w': data_offsets is not [begin, end]",
    ),
    "offsets-reversed": (
        _file({"w": _t(offsets=[8, 0])}, 8),
        "corrupt",
        "tensor 'w': data_offsets end before they begin",
    ),
    "unknown-dtype": (
        _file({"w": _t(dtype="F7")}, 8),
        "unsupported",
        "tensor 'w': unknown dtype 'F7'",
    ),
    "gap": (
        _file({"w": _t(offsets=[4, 12])}, 12),
        "corrupt",
        "gap before tensor 'w' in the data section",
    ),
    "overlap": (
        _file({"a": _t(offsets=[0, 8]), "b": _t(offsets=[4, 12])}, 12),
        "corrupt",
        "overlap at tensor 'b' in the data section",
    ),
    "wrong-size": (
        _file({"w": _t(offsets=[0, 4])}, 4),
        "corrupt",
        "tensor 'w': data_offsets do not match F32 [2]",
    ),
    "shape-overflows": (
        _file({"w": _t(dtype="U8", shape=[2**32, 2**32, 0])}, 0),
        "corrupt",
        "tensor 'w': shape overflows",
    ),
    "size-overflows": (
        _file({"w": _t(dtype="F64", shape=[2**62])}, 0),
        "corrupt",
        "tensor 'w': size overflows",
    ),
    "sub-byte": (
        _file({"w": _t(dtype="F4", shape=[3], offsets=[0, 2])}, 2),
        "corrupt",
        "tensor 'w': F4 data is not a whole number of bytes",
    ),
    "missing-data": (
        _file({"w": _t()}, 4),
        "truncated",
        f"file has {8 + len(json.dumps({'w': _t()})) + 4} bytes, header promises "
        f"{8 + len(json.dumps({'w': _t()})) + 8}",
    ),
    "trailing": (_file({"w": _t()}, 11), "corrupt", "3 unexpected bytes after the last tensor"),
    "long-name": (
        _file({LONG: 3}),
        "corrupt",
        f"tensor {'w' * 57 + '...'!r}: expected an object with dtype, shape, data_offsets",
    ),
    "name-of-60": (
        _file({"n" * 60: 3}),
        "corrupt",
        f"tensor {'n' * 60!r}: expected an object with dtype, shape, data_offsets",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_verdict_and_message_through_both_doors(tmp_path: Path, case: str) -> None:
    data, status, message = CASES[case]
    with pytest.raises(HeaderError) as err:
        parse_header(data, len(data))
    assert (err.value.status, str(err.value)) == (status, message)
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with pytest.raises(HeaderError) as err:
        read_header(str(path))
    assert (err.value.status, str(err.value)) == (status, message)


def test_header_length_limit_is_inclusive() -> None:
    head = b'{"__metadata__":{"k":"v"}}'
    data = _file(head)
    assert parse_header(data, len(data), max_header=len(head)).metadata == {"k": "v"}
    with pytest.raises(HeaderError) as err:
        parse_header(data, len(data), max_header=len(head) - 1)
    assert str(err.value) == f"header length {len(head)} exceeds the {len(head) - 1}-byte limit"


def test_header_exactly_filling_the_file_and_the_prefix() -> None:
    data = _file("{}")
    assert parse_header(data, len(data)).tensors == ()
    with pytest.raises(HeaderError, match="runs past the end of the file"):
        parse_header(data, len(data) - 1)  # the file is one byte shorter than the header
    with pytest.raises(HeaderError, match="runs past the end of the file"):
        parse_header(data[:-1], len(data))  # the prefix read is one byte short
    with pytest.raises(HeaderError, match="shorter than the 8-byte"):
        parse_header(data, 7)
    with pytest.raises(HeaderError, match="shorter than the 8-byte"):
        parse_header(data[:7], len(data))


def test_byte_counts_stay_exact_past_float_precision() -> None:
    """A U8 tensor of 2**53 + 1 elements: its byte count is not a float (pure parse, with the
    file size given; no such file is written)."""
    count = 2**53 + 1
    head = json.dumps({"w": _t(dtype="U8", shape=[count], offsets=[0, count])}).encode()
    prefix = struct.pack("<Q", len(head)) + head
    header = parse_header(prefix, len(prefix) + count)
    assert header.data_bytes == count and header.total_bytes == len(prefix) + count
    assert header.parameter_count == count


def test_largest_u64_values_are_accepted() -> None:
    head = json.dumps({"w": _t(dtype="U8", shape=[1, 0], offsets=[U64, U64])}).encode()
    prefix = struct.pack("<Q", len(head)) + head
    with pytest.raises(HeaderError) as err:  # valid fields; the data starts at U64: a gap
        parse_header(prefix, len(prefix))
    assert str(err.value) == "gap before tensor 'w' in the data section"


def test_negative_numbers_take_the_exact_path() -> None:
    """A "-0" or negative number is a float to the library: the header is refused, whatever
    the fast decoder would have made of it."""
    for dims in ("[-0]", "[2, -0]"):
        data = _file('{"w": {"dtype": "F32", "shape": ' + dims + ', "data_offsets": [0, 0]}}')
        with pytest.raises(HeaderError) as err:
            parse_header(data, len(data))
        assert str(err.value) == "tensor 'w': shape is not a list of non-negative integers"


def test_a_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(HeaderError) as err:
            read_header(fd)
    finally:
        os.close(fd)
    assert (err.value.status, str(err.value)) == ("corrupt", "not a regular file")
