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
from unittest import mock

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from ckpt_tui.safetensors_header import MAX_HEADER_BYTES, HeaderError, parse_header, read_header

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
    "over-limit": (
        struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}",
        "corrupt",
        f"header length {MAX_HEADER_BYTES + 1} exceeds the {MAX_HEADER_BYTES}-byte limit",
    ),
    "not-utf8": (_file(b"\xff\xfe"), "corrupt", "header is not valid UTF-8"),
    "not-json": (
        _file("{"),
        "corrupt",
        "header is not valid JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    "not-object": (_file("[1]"), "corrupt", "header JSON is not an object"),
    "duplicate": (_file('{"a": 1, "a": 2}'), "corrupt", "duplicate key 'a' in header"),
    "duplicate-not-first": (
        _file('{"b": 1, "a": 1, "a": 2}'),
        "corrupt",
        "duplicate key 'a' in header",
    ),
    # the escaped ":" makes the decoded strings hold one more ":" than the text shows, which
    # would hide the dropped duplicate from a colon count on the text
    "duplicate-behind-escaped-colon": (
        _file('{"__metadata__": {"k\\u003a": "v", "a": "1", "a": "2"}}'),
        "corrupt",
        "duplicate key 'a' in header",
    ),
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


def test_header_length_limit_is_inclusive_when_read_from_a_file(tmp_path: Path) -> None:
    head = b'{"__metadata__":{"k":"v"}}'
    path = tmp_path / "x.safetensors"
    path.write_bytes(_file(head))
    assert read_header(str(path), max_header=len(head)).metadata == {"k": "v"}
    with pytest.raises(HeaderError) as err:
        read_header(str(path), max_header=len(head) - 1)
    assert (err.value.status, str(err.value)) == (
        "corrupt",
        f"header length {len(head)} exceeds the {len(head) - 1}-byte limit",
    )


@pytest.mark.parametrize("shape", [[U64, 0], [2**63, 0], [U64, 1, 0], [0, U64]])
def test_largest_dims_beside_a_zero_are_an_empty_tensor(tmp_path: Path, shape: list[int]) -> None:
    """Every dim fits in u64 and no partial product overflows: the library opens the file as an
    empty tensor of that shape, and so do we."""
    data = _file({"w": _t(dtype="U8", shape=shape, offsets=[0, 0])})
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), framework="numpy") as f:
        assert f.get_slice("w").get_shape() == shape
    for header in (parse_header(data, len(data)), read_header(str(path))):
        assert [(t.name, t.shape) for t in header.tensors] == [("w", tuple(shape))]
        assert (header.data_bytes, header.parameter_count) == (0, 0)


def _verdict_at_scanned_size(path: Path, scanned: int) -> tuple[str, str] | int:
    """What the scan records: the header read with the size the scan's stat gave."""
    try:
        return read_header(str(path), file_size=scanned).data_bytes
    except HeaderError as err:
        return err.status, str(err)


def test_the_scanned_size_decides_not_the_size_now(tmp_path: Path) -> None:
    """The scan stats a file, then reads its header: a file that changed in between is judged
    by the size the scan recorded, and a file cut short since then says where it ended."""
    path = tmp_path / "x.safetensors"
    valid = _file({"w": _t()}, 8)
    path.write_bytes(valid + b"grew")  # appended to since the stat
    assert _verdict_at_scanned_size(path, len(valid)) == 8
    path.write_bytes(valid[:40])  # cut inside the header since the stat
    assert _verdict_at_scanned_size(path, len(valid)) == (
        "truncated",
        "file ended inside the header",
    )
    path.write_bytes(valid[:5])  # cut inside the length field since the stat
    assert _verdict_at_scanned_size(path, len(valid)) == (
        "truncated",
        "file is shorter than the 8-byte header length",
    )


def test_a_header_longer_than_one_read_comes_back_whole_and_nothing_more_is_read(
    tmp_path: Path,
) -> None:
    """A header past the reader's 16 MiB read size (a huge metadata value), tensor data after
    it: the header comes back whole, and exactly its 8 + N bytes are asked of the OS, none of
    the tensor data. os.pread is wrapped, not faked (the bytes asked are not otherwise
    visible); the wrapper fails as soon as more is asked, so a reader that loops stops."""
    path = tmp_path / "big.safetensors"
    blob = "0123456789abcdef" * (1 << 20) + "tail"
    save_file({"w": np.arange(4096, dtype=np.float32)}, str(path), metadata={"blob": blob})
    n = int.from_bytes(path.read_bytes()[:8], "little")
    assert n > 1 << 24
    asked: list[int] = []
    real_pread = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        asked.append(size)
        if sum(asked) > 8 + n:
            raise AssertionError(f"asked for {sum(asked)} bytes, the header has {8 + n}")
        return real_pread(fd, size, offset)

    with mock.patch.object(os, "pread", pread):
        header = read_header(str(path))
    assert header.metadata == {"blob": blob}
    assert [(t.name, t.shape, t.end) for t in header.tensors] == [("w", (4096,), 4 * 4096)]
    assert sum(asked) == 8 + n
