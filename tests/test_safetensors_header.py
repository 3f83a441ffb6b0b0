"""Tests for ckpt_tui.safetensors_header, including a differential test against safetensors."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import save_file

from ckpt_tui import safetensors_header as sh
from ckpt_tui.safetensors_header import (
    DTYPE_BITS,
    MAX_HEADER_BYTES,
    Header,
    HeaderError,
    parse_header,
    read_header,
)

U64_MAX = 2**64 - 1


# ----------------------------------------------------------------------------- helpers


def build(header: bytes | dict[str, Any], data: bytes = b"", *, n: int | None = None) -> bytes:
    """A raw file: 8-byte length (``n`` overrides it), header bytes, data bytes."""
    hb = json.dumps(header).encode() if isinstance(header, dict) else header
    return (len(hb) if n is None else n).to_bytes(8, "little") + hb + data


def entry(dtype: Any, shape: Any, begin: Any, end: Any) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def exact_parse(raw: bytes, file_size: int) -> Header:
    """parse_header through the ``json`` path only (the msgspec fast path turned off)."""
    with mock.patch.object(sh, "_parse_fast", lambda *_: None):
        return parse_header(raw, file_size)


def verdict(parse: Callable[[], Header]) -> Header | tuple[str, str]:
    try:
        return parse()
    except HeaderError as exc:
        return exc.status, str(exc)


def outcome(tmp_path: Path, raw: bytes) -> Header | str:
    """Parse ``raw`` purely, from a file and through the exact path alone; all must agree.
    Returns Header or status."""
    path = tmp_path / "t.safetensors"
    path.write_bytes(raw)
    results: list[Header | str] = []
    parsers: list[Callable[[], Header]] = [
        lambda: parse_header(raw, len(raw)),
        lambda: read_header(path),
        lambda: exact_parse(raw, len(raw)),
    ]
    for parse in parsers:
        try:
            results.append(parse())
        except HeaderError as exc:
            assert exc.status in {"truncated", "corrupt", "unsupported"}
            results.append(exc.status)
    assert results[0] == results[1] == results[2]
    return results[0]


@contextlib.contextmanager
def count_preads() -> Iterator[list[int]]:
    """Record the byte count of every os.pread request."""
    requests: list[int] = []
    real = os.pread

    def counting(fd: int, n: int, offset: int) -> bytes:
        requests.append(n)
        return real(fd, n, offset)

    with mock.patch.object(os, "pread", counting):
        yield requests


def library_accepts(path: Path) -> tuple[bool, dict[str, Any] | None]:
    """Open with the reference implementation; return (ok, {name: (dtype, shape)} + metadata)."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            info: dict[str, Any] = {}
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                sl = f.get_slice(name)
                info[name] = (sl.get_dtype(), tuple(sl.get_shape()))
            return True, {"tensors": info, "metadata": f.metadata() or {}}
    except Exception:
        return False, None


def ours_accepts(path: Path) -> tuple[bool, dict[str, Any] | None]:
    try:
        h = read_header(path)
    except HeaderError:
        return False, None
    info = {t.name: (t.dtype, t.shape) for t in h.tensors}
    return True, {"tensors": info, "metadata": h.metadata}


VALID = {"a": entry("F32", [2], 0, 8), "b": entry("I8", [3], 8, 11)}
VALID_DATA = b"\0" * 11


# ----------------------------------------------------------------------------- valid files


def test_valid_file_written_by_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    tensors: dict[str, np.ndarray[Any, Any]] = {
        "W_enc": np.ones((4, 3), dtype=np.float32),
        "b_dec": np.arange(3, dtype=np.float16),
        "steps": np.array(7, dtype=np.int64),
        "mask": np.zeros((0, 2), dtype=bool),
    }
    meta = {"step": "498000", "layer_idx": "7", "avg_loss": "0.125"}
    save_file(tensors, str(path), metadata=meta)
    h = read_header(path)
    assert {t.name: (t.dtype, t.shape) for t in h.tensors} == {
        "W_enc": ("F32", (4, 3)),
        "b_dec": ("F16", (3,)),
        "steps": ("I64", ()),
        "mask": ("BOOL", (0, 2)),
    }
    assert h.parameter_count == 12 + 3 + 1 + 0
    assert h.metadata == meta
    assert h.total_bytes == path.stat().st_size
    assert h.data_bytes == 48 + 6 + 8
    assert [t.start for t in h.tensors] == sorted(t.start for t in h.tensors)
    assert h.tensors[0].start == 0 and h.tensors[-1].end == h.data_bytes
    assert all(a.end == b.start for a, b in zip(h.tensors, h.tensors[1:], strict=False))
    assert parse_header(path.read_bytes(), h.total_bytes) == h  # pure parse, longer prefix
    assert read_header(str(path)) == h  # str path as well as PathLike


def test_empty_header_and_absent_or_null_metadata(tmp_path: Path) -> None:
    h = outcome(tmp_path, build(b"{}"))
    assert isinstance(h, Header)
    assert (h.tensors, h.metadata, h.data_bytes, h.parameter_count) == ((), {}, 0, 0)
    h = outcome(tmp_path, build({"__metadata__": None, **VALID}, VALID_DATA))
    assert isinstance(h, Header) and h.metadata == {}


@pytest.mark.parametrize("pad", [b" ", b"  \t\r\n", b"\n"])
def test_json_whitespace_padding_accepted(tmp_path: Path, pad: bytes) -> None:
    # The library (serde_json) accepts JSON whitespace before and after the object.
    hb = json.dumps(VALID).encode()
    assert isinstance(outcome(tmp_path, build(hb + pad, VALID_DATA)), Header)
    assert isinstance(outcome(tmp_path, build(pad + hb, VALID_DATA)), Header)


@pytest.mark.parametrize(("dtype", "bits"), sorted(DTYPE_BITS.items()))
def test_every_known_dtype_size(tmp_path: Path, dtype: str, bits: int) -> None:
    nbytes = 8 * bits // 8
    h = outcome(tmp_path, build({"t": entry(dtype, [2, 4], 0, nbytes)}, b"\0" * nbytes))
    assert isinstance(h, Header) and h.tensors[0].dtype == dtype
    wrong = build({"t": entry(dtype, [2, 4], 0, nbytes + 1)}, b"\0" * (nbytes + 1))
    assert outcome(tmp_path, wrong) == "corrupt"


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes", "expected"),
    [
        ("F4", [4], 2, "ok"),
        ("F4", [2, 3], 3, "ok"),  # the library checks whole bytes on the total, not per row
        ("F4", [3], 2, "corrupt"),
        ("F4", [3], 1, "corrupt"),
        ("F6_E2M3", [4], 3, "ok"),
        ("F6_E3M2", [3], 2, "corrupt"),
    ],
)
def test_sub_byte_dtypes(
    tmp_path: Path, dtype: str, shape: list[int], nbytes: int, expected: str
) -> None:
    got = outcome(tmp_path, build({"t": entry(dtype, shape, 0, nbytes)}, b"\0" * nbytes))
    assert (got if isinstance(got, str) else "ok") == expected


# ----------------------------------------------------------------------------- rejection rules


def test_shorter_than_8_bytes_is_truncated(tmp_path: Path) -> None:
    for raw in (b"", b"\x02\x00\x00", b"\x00" * 7):
        assert outcome(tmp_path, raw) == "truncated"


def test_header_length_over_limit_is_corrupt(tmp_path: Path) -> None:
    raw = build(b"{}", n=MAX_HEADER_BYTES + 1)
    assert outcome(tmp_path, raw) == "corrupt"
    assert outcome(tmp_path, build(b"{}", n=U64_MAX)) == "corrupt"


def test_header_past_end_of_file_is_truncated(tmp_path: Path) -> None:
    assert outcome(tmp_path, build(b"{}", n=3)) == "truncated"
    assert outcome(tmp_path, build(json.dumps(VALID).encode()[:20], n=60)) == "truncated"


def test_header_not_utf8_is_corrupt(tmp_path: Path) -> None:
    assert outcome(tmp_path, build(b'{"__metadata__":{"k":"\xff"}}')) == "corrupt"
    assert outcome(tmp_path, build(b'{"__metadata__":{"k":"\xed\xa0\x80"}}')) == "corrupt"


@pytest.mark.parametrize("header", [b"[]", b'"x"', b"1", b"null", b"true"])
def test_json_not_an_object_is_corrupt(tmp_path: Path, header: bytes) -> None:
    assert outcome(tmp_path, build(header)) == "corrupt"


@pytest.mark.parametrize("header", [b"", b"{", b"{'a': 1}", b"{}{}", b"{,}", b"\xef\xbb\xbf{}"])
def test_invalid_json_is_corrupt(tmp_path: Path, header: bytes) -> None:
    assert outcome(tmp_path, build(header)) == "corrupt"


@pytest.mark.parametrize(
    "header",
    [
        b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
        b'"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"a":{"dtype":"F32","dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"__metadata__":{"k":"1","k":"2"}}',
        b'{"__metadata__":{"k":"1"},"__metadata__":{"k":"1"}}',
    ],
)
def test_duplicate_keys_are_corrupt(tmp_path: Path, header: bytes) -> None:
    assert outcome(tmp_path, build(header)) == "corrupt"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_corrupt(tmp_path: Path, constant: str) -> None:
    assert outcome(tmp_path, build(f'{{"__metadata__":{{"k":{constant}}}}}'.encode())) == "corrupt"
    raw = build(f'{{"a":{{"dtype":"F32","shape":[{constant}],"data_offsets":[0,0]}}}}'.encode())
    assert outcome(tmp_path, raw) == "corrupt"


@pytest.mark.parametrize("pad", [b"\0", b"\0" * 7, b" \0 "])
def test_nul_padding_is_corrupt(tmp_path: Path, pad: bytes) -> None:
    hb = json.dumps(VALID).encode()
    assert outcome(tmp_path, build(hb + pad, VALID_DATA)) == "corrupt"
    assert outcome(tmp_path, build(pad + hb, VALID_DATA)) == "corrupt"


@pytest.mark.parametrize(
    "info",
    [
        None,
        "F32",
        ["F32", [0], [0, 0]],  # the library (serde) takes a tuple-like list; we do not
        {"dtype": "F32", "shape": [0]},
        {"dtype": "F32", "data_offsets": [0, 0]},
        {"shape": [0], "data_offsets": [0, 0]},
        {**entry("F32", [0], 0, 0), "extra": 1},  # the library ignores unknown fields
        {"dtype": {"F32": None}, "shape": [0], "data_offsets": [0, 0]},  # serde enum-as-map
        entry(32, [0], 0, 0),
        entry("F32", "0", 0, 0),
        entry("F32", [-1], 0, 0),
        entry("F32", [0.0], 0, 0),
        entry("F32", [False], 0, 0),
        entry("F32", [True], 0, 4),
        entry("F32", [None], 0, 0),
        entry("F32", [2**64], 0, 0),
        entry("F32", [0], -1, 0),
        entry("F32", [0], 0, 0.0),
        entry("F32", [0], True, True),
        entry("F32", [1], 4, 0),
        {"dtype": "F32", "shape": [0], "data_offsets": [0]},
        {"dtype": "F32", "shape": [0], "data_offsets": [0, 0, 0]},
        {"dtype": "F32", "shape": [0], "data_offsets": {"0": 0, "1": 0}},
    ],
)
def test_malformed_tensor_entry_is_corrupt(tmp_path: Path, info: Any) -> None:
    assert outcome(tmp_path, build(json.dumps({"t": info}).encode())) == "corrupt"


def test_negative_zero_is_corrupt(tmp_path: Path) -> None:
    # serde_json reads -0 as the float -0.0, which a usize rejects; Python would give int 0.
    raw = build(b'{"t":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}')
    assert outcome(tmp_path, raw) == "corrupt"


@pytest.mark.parametrize("dtype", ["F128", "f32", "FLOAT32", "", "Q4_K"])
def test_unknown_dtype_is_unsupported(tmp_path: Path, dtype: str) -> None:
    assert outcome(tmp_path, build({"t": entry(dtype, [2], 0, 8)}, b"\0" * 8)) == "unsupported"


@pytest.mark.parametrize(("shape", "end"), [([2], 4), ([2], 12), ([], 0), ([0], 4), ([3, 1], 8)])
def test_offsets_not_matching_shape_and_dtype_is_corrupt(
    tmp_path: Path, shape: list[int], end: int
) -> None:
    assert outcome(tmp_path, build({"t": entry("F32", shape, 0, end)}, b"\0" * end)) == "corrupt"


def test_gap_between_tensors_is_corrupt(tmp_path: Path) -> None:
    raw = build({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, b"\0" * 12)
    assert outcome(tmp_path, raw) == "corrupt"
    assert outcome(tmp_path, build({"a": entry("F32", [1], 4, 8)}, b"\0" * 8)) == "corrupt"


def test_overlapping_tensors_are_corrupt(tmp_path: Path) -> None:
    raw = build({"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}, b"\0" * 8)
    assert outcome(tmp_path, raw) == "corrupt"
    raw = build({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}, b"\0" * 8)
    assert outcome(tmp_path, raw) == "corrupt"


def test_zero_size_tensors_share_an_offset(tmp_path: Path) -> None:
    header = {"z1": entry("F32", [0], 0, 0), "z2": entry("I8", [0, 5], 0, 0), **VALID}
    h = outcome(tmp_path, build(header, VALID_DATA))
    assert isinstance(h, Header) and len(h.tensors) == 4


@pytest.mark.parametrize("meta", [[], "x", 1, {"k": 1}, {"k": None}, {"k": ["v"]}, {"k": {}}])
def test_metadata_not_str_to_str_is_corrupt(tmp_path: Path, meta: Any) -> None:
    assert outcome(tmp_path, build({"__metadata__": meta, **VALID}, VALID_DATA)) == "corrupt"


def test_trailing_bytes_after_data_are_corrupt(tmp_path: Path) -> None:
    assert outcome(tmp_path, build(VALID, VALID_DATA + b"\0")) == "corrupt"
    assert outcome(tmp_path, build(b"{}", b"x")) == "corrupt"


def test_missing_data_is_truncated(tmp_path: Path) -> None:
    assert outcome(tmp_path, build(VALID, VALID_DATA[:-1])) == "truncated"
    assert outcome(tmp_path, build(VALID)) == "truncated"


def test_huge_shapes_overflow_like_the_library(tmp_path: Path) -> None:
    # The library multiplies dims left to right with u64 overflow checks, then by the bit size.
    assert outcome(tmp_path, build({"t": entry("F32", [2**63, 4, 0], 0, 0)})) == "corrupt"
    assert outcome(tmp_path, build({"t": entry("F32", [2**62], 0, 0)})) == "corrupt"
    assert outcome(tmp_path, build({"t": entry("BOOL", [2**61], 0, 0)})) == "corrupt"
    h = outcome(tmp_path, build({"t": entry("F32", [2**62, 0], 0, 0)}))
    assert isinstance(h, Header) and h.parameter_count == 0
    many = build({"t": entry("F32", [U64_MAX] * 5000, 0, 0)})
    assert outcome(tmp_path, many) == "corrupt"
    digits = build(b'{"t":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,0]}}')
    assert outcome(tmp_path, digits) == "corrupt"


@pytest.mark.parametrize(
    "header",
    [
        b'{"\\ud800":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"__metadata__":{"k":"\\udfff"}}',
        b'{"__metadata__":{"\\ud800x":"v"}}',
    ],
)
def test_lone_surrogate_escapes_are_corrupt(tmp_path: Path, header: bytes) -> None:
    assert outcome(tmp_path, build(header)) == "corrupt"


def test_deeply_nested_json_is_corrupt(tmp_path: Path) -> None:
    for depth in (200, 200_000):
        raw = build(b'{"x":' + b"[" * depth + b"]" * depth + b"}")
        assert outcome(tmp_path, raw) == "corrupt"
        raw = build(b'{"x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
        assert outcome(tmp_path, raw) == "corrupt"


# ----------------------------------------------------------------------------- fast path
# msgspec decodes most headers; it keeps the last of duplicate keys and reads -0 as 0, so its
# result stands only when the exact (json) path would give the same one.


def test_fast_path_decodes_common_headers(tmp_path: Path) -> None:
    path = tmp_path / "lib.safetensors"
    save_file(
        {"W_enc": np.ones((4, 3), dtype=np.float32), "b_dec": np.zeros(3, dtype=np.float16)},
        str(path),
        metadata={"step": "498000", "when": "2024-06-01T10:00:00", "note": "a: b, c"},
    )
    pretty = build(json.dumps(VALID, indent=2).encode(), VALID_DATA)  # ": " and newlines
    for raw in (path.read_bytes(), build(VALID, VALID_DATA), pretty):
        with mock.patch.object(sh, "_DECODERS", {}):  # the json path would raise KeyError
            h = parse_header(raw, len(raw))
        assert h == exact_parse(raw, len(raw))


@pytest.mark.parametrize(
    "text",
    [
        # duplicates msgspec silently drops, with and without ":" in strings or odd spacing
        b'{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
        b'"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"a:b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
        b'"a:b" :{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"__metadata__":{"k":"x:y","k" : "x:y"}}',
        b'{"__metadata__":{"k":"1"} ,"__metadata__" :{"k":"1"}}',
        b'{"__metadata__":null,"__metadata__":null}',
        b'{"t":{"dtype":"F32","dtype" :"F32","shape":[0],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[0],"shape":[0],"data_offsets":[0,0]}}',
        # a duplicate hidden by a colon in a string: the counts must not cancel out
        b'{"__metadata__":{"k":"v","k":"v"},"x:":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
        # numbers msgspec reads differently or not at all
        b'{"t":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[-0,0]}}',
        b'{"t":{"dtype":"F32","shape":[ -0],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[0],"data_offsets":[0, -0]}}',
        b'{"t":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[1e400],"data_offsets":[0,0]}}',
        b'{"t":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,0]}}',
        b'{"__metadata__":{"k":NaN}}',
        b'{"__metadata__":{"k":-Infinity}}',
        b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        # escapes: lone surrogates, escaped colons and keys that collide once unescaped
        b'{"__metadata__":{"k":"\\ud800"}}',
        b'{"__metadata__":{"\\u006b":"1","k":"2"}}',
        # an unknown dtype next to a duplicate: corrupt wins, as on the json path
        b'{"a":{"dtype":"F128","shape":[0],"data_offsets":[0,0]},'
        b'"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
        b'"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}',
    ],
)
def test_fast_path_agrees_with_the_exact_path(tmp_path: Path, text: bytes) -> None:
    raw = build(text)
    assert verdict(lambda: parse_header(raw, len(raw))) == verdict(
        lambda: exact_parse(raw, len(raw))
    )
    assert outcome(tmp_path, raw) in ("corrupt", "unsupported")


def test_fast_path_keeps_valid_negative_looking_strings(tmp_path: Path) -> None:
    header = {"__metadata__": {"loss": "-0.5", "range": "[-1, 1]", "d": "2024-06-01"}, **VALID}
    h = outcome(tmp_path, build(header, VALID_DATA))
    assert isinstance(h, Header) and h.metadata == header["__metadata__"]
    h = outcome(tmp_path, build(b'{"__metadata__":{"k":"\\u003a","j":"a:"}}'))
    assert isinstance(h, Header) and h.metadata == {"k": ":", "j": "a:"}


def _json_text(draw: st.DrawFn) -> str:
    """Header-like JSON written with varied separators, keys with ':' and duplicates."""
    names = st.sampled_from(["a", "b", "a:b", ":", "x y", "__metadata__", "dtype"])
    colon = st.sampled_from([":", ": ", " :", " : ", "\n:"])
    comma = st.sampled_from([",", ", ", " ,", ",\n"])

    def obj(members: list[tuple[str, str]]) -> str:
        return "{" + draw(comma).join(json.dumps(k) + draw(colon) + v for k, v in members) + "}"

    members = []
    cursor = 0
    for _ in range(draw(st.integers(0, 4))):
        n = draw(st.sampled_from([0, 4, 8]))
        fields = [
            ("dtype", json.dumps(draw(st.sampled_from(["F32", "I8", "F128"])))),
            ("shape", json.dumps([n // 4] if draw(st.booleans()) else [n // 4, 1])),
            ("data_offsets", json.dumps([cursor, cursor + n])),
        ]
        if draw(st.integers(0, 5)) == 0:
            fields.append(draw(st.sampled_from(fields)))
        members.append((draw(names), obj(fields)))
        cursor += n
    if draw(st.booleans()):
        meta = draw(st.dictionaries(st.sampled_from(["k", "k:", "v"]), st.text(":-ab", max_size=3)))
        members.append(("__metadata__", json.dumps(meta)))
    if members and draw(st.integers(0, 4)) == 0:
        members.append(draw(st.sampled_from(members)))
    return obj(members)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=st.data())
def test_fast_path_agrees_with_the_exact_path_on_generated_headers(data: st.DataObject) -> None:
    text = data.draw(st.composite(lambda draw: _json_text(draw))()).encode()
    raw = build(text)
    for size in (len(raw), len(raw) + data.draw(st.sampled_from([0, 4, 8, 12, 16]))):
        padded = raw + b"\0" * (size - len(raw))
        assert verdict(lambda p=padded, n=size: parse_header(p, n)) == verdict(
            lambda p=padded, n=size: exact_parse(p, n)
        )


# ----------------------------------------------------------------------------- I/O behaviour


def test_never_reads_past_a_bad_declared_length(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(build(b"{}", n=2**40))
    with count_preads() as requests, pytest.raises(HeaderError) as exc:
        read_header(path)
    assert exc.value.status == "corrupt"
    assert sum(requests) <= 8
    # Under the bound but past the end of the file: rejected from the size alone.
    path.write_bytes(build(b"{}", n=50_000_000))
    with count_preads() as requests, pytest.raises(HeaderError) as exc:
        read_header(path)
    assert exc.value.status == "truncated"
    assert sum(requests) <= 8


def test_wrong_file_size_does_not_allocate_n_bytes(tmp_path: Path) -> None:
    path = tmp_path / "small.safetensors"
    path.write_bytes(build(b"{}", n=2**40))
    fd = os.open(path, os.O_RDONLY)
    try:
        with count_preads() as requests, pytest.raises(HeaderError) as exc:
            read_header(fd, file_size=2**50, max_header=2**45)
        assert exc.value.status == "truncated"
        assert max(requests) <= 1 << 24
    finally:
        os.close(fd)


def test_fd_is_left_open_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "f.safetensors"
    path.write_bytes(build(VALID, VALID_DATA))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        with count_preads() as requests:
            h = read_header(fd)
        assert h.total_bytes == path.stat().st_size
        assert sum(requests) == 8 + h.header_len  # never the tensor data
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
        os.fstat(fd)  # still open
        with pytest.raises(HeaderError) as exc:
            read_header(fd, file_size=h.total_bytes - 1)
        assert exc.value.status == "truncated"
        with pytest.raises(HeaderError) as exc:
            read_header(fd, file_size=h.total_bytes + 1)
        assert exc.value.status == "corrupt"
    finally:
        os.close(fd)


def test_fifo_and_pipe_do_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)

    def fail(signum: int, frame: object) -> None:
        raise AssertionError("read_header blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    try:
        with pytest.raises(HeaderError) as exc:
            read_header(fifo)
        assert exc.value.status == "corrupt"
        r, w = os.pipe()
        try:
            with pytest.raises(HeaderError):
                read_header(r)
        finally:
            os.close(r)
            os.close(w)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_os_errors_propagate_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "real.safetensors"
    target.write_bytes(build(VALID, VALID_DATA))
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    with pytest.raises(OSError) as exc:
        read_header(link)  # O_NOFOLLOW
    assert not isinstance(exc.value, HeaderError)
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "missing.safetensors")
    with pytest.raises(HeaderError):
        read_header(tmp_path)  # a directory opens read-only fine, then fails the S_ISREG check


# ----------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # includes NaN / inf, which json.dumps writes as bare constants
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)


@st.composite
def near_valid_files(draw: st.DrawFn) -> bytes:
    """A file that is valid about a third of the time, else a few small steps from valid."""

    def rarely(one_in: int) -> bool:
        return draw(st.integers(0, one_in - 1)) == 0

    obj: Any = {}
    cursor = 0
    for _ in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from([*sorted(DTYPE_BITS), "F128"]))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        nbytes = math.prod(shape) * DTYPE_BITS.get(dtype, 8) // 8
        begin = cursor + (draw(st.sampled_from([1, -1])) if rarely(12) else 0)
        end = begin + nbytes + (1 if rarely(12) else 0)
        info: Any = draw(json_values) if rarely(20) else entry(dtype, shape, begin, end)
        obj[draw(st.text(max_size=4))] = info
        cursor = max(cursor, end)
    if draw(st.booleans()):
        meta = st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)
        obj["__metadata__"] = draw(json_values if rarely(4) else meta)
    if rarely(20):
        obj = draw(json_values)
    pad = draw(st.sampled_from(["\0", "\0 ", " \0"])) if rarely(12) else " " * rarely(3)
    text = (json.dumps(obj) + pad).encode()
    n = len(text)
    if rarely(8):
        n = draw(st.integers(0, U64_MAX) | st.integers(max(0, n - 3), n + 3))
    data = b"\0" * max(0, cursor + (draw(st.sampled_from([-1, 1, 5])) if rarely(8) else 0))
    raw = n.to_bytes(8, "little") + text + data
    return raw[: draw(st.integers(0, len(raw)))] if rarely(20) else raw


@st.composite
def arbitrary_files(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return body
    n = draw(st.integers(0, len(body)) | st.integers(0, U64_MAX))
    return n.to_bytes(8, "little") + body


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prop") / "f.safetensors"


def _check_read(path: Path, raw: bytes) -> Header | None:
    """read_header raises only HeaderError and requests <= 8 + min(N, file size) bytes."""
    path.write_bytes(raw)
    declared = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else 0
    with count_preads() as requests:
        try:
            h: Header | None = read_header(path)
        except HeaderError:
            h = None
    assert sum(requests) <= 8 + min(declared, len(raw))
    assert sum(requests) <= max(len(raw), 8)
    return h


PROPERTY = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(raw=arbitrary_files(), size=st.integers(-1, 2**65))
def test_arbitrary_bytes_raise_only_header_error(scratch: Path, raw: bytes, size: int) -> None:
    for file_size in (len(raw), size):
        with contextlib.suppress(HeaderError):
            parse_header(raw, file_size)
    _check_read(scratch, raw)


@PROPERTY
@given(raw=near_valid_files())
def test_near_valid_files_agree_with_library(scratch: Path, raw: bytes) -> None:
    with contextlib.suppress(HeaderError):
        parse_header(raw, len(raw))
    h = _check_read(scratch, raw)
    if h is not None:  # we accept => the library accepts, and sees the same tensors
        lib_ok, lib_info = library_accepts(scratch)
        assert lib_ok
        assert ours_accepts(scratch)[1] == lib_info


# ----------------------------------------------------------------------------- differential

NUMPY_DTYPES = [
    np.float64, np.float32, np.float16, np.int64, np.uint64, np.int32,
    np.uint32, np.int16, np.uint16, np.int8, np.uint8, np.bool_, np.complex64,
]  # fmt: skip

# Where the library accepts a file that we reject on purpose (see the module docstring).
STRICTER_BY_DESIGN = {"dup_tensor", "dup_meta_key", "extra_field", "entry_as_list", "dtype_map"}


def _valid_file(rng: random.Random, path: Path) -> bytes:
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for i in range(rng.randint(0, 4)):
        shape = tuple(rng.choice([0, 1, 2, 3, 4]) for _ in range(rng.randint(0, 3)))
        dtype = rng.choice(NUMPY_DTYPES)
        tensors[f"t{i}_{rng.choice(['W_enc', 'b_dec', 'x'])}"] = (
            np.arange(math.prod(shape)).reshape(shape).astype(dtype)
        )
    meta = {k: str(rng.randint(0, 10**6)) for k in rng.sample(["step", "layer_idx", "lr"], 2)}
    if rng.random() < 0.5:
        meta["avg_loss"] = repr(rng.random())
    save_file(tensors, str(path), metadata=meta if rng.random() < 0.8 else None)
    return path.read_bytes()


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _rewrite(raw: bytes, fn: Callable[[dict[str, Any], bytes], tuple[Any, bytes]]) -> bytes:
    header, data = _split(raw)
    new_header, new_data = fn(header, data)
    text = new_header if isinstance(new_header, bytes) else json.dumps(new_header).encode()
    return build(text, new_data)


def _tensor_names(h: dict[str, Any]) -> list[str]:
    names = [k for k in h if k != "__metadata__"]
    return sorted(names, key=lambda k: tuple(h[k]["data_offsets"]))


def _mutations(raw: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    n = int.from_bytes(raw[:8], "little")
    header, data = _split(raw)
    names = _tensor_names(header)
    flip = bytearray(raw)
    flip[rng.randrange(8, 8 + n)] ^= rng.randint(1, 255)
    yield "flip_header", bytes(flip)
    flip = bytearray(raw)
    flip[rng.randrange(8)] ^= rng.randint(1, 255)
    yield "flip_length", bytes(flip)
    yield "truncate", raw[: rng.randrange(len(raw))]
    yield "append", raw + rng.randbytes(rng.randint(1, 16))
    yield "header_len", (n + rng.choice([-8, -1, 1, 8])).to_bytes(8, "little") + raw[8:]
    pad = rng.choice([" ", "\n\t", "\0", " \0"])
    yield "pad", build(json.dumps(header).encode() + pad.encode(), data)
    yield "nan", _rewrite(raw, lambda h, d: ({**h, "__metadata__": {"k": math.nan}}, d))
    yield "meta_null", _rewrite(raw, lambda h, d: ({**h, "__metadata__": None}, d))
    yield "meta_int", _rewrite(raw, lambda h, d: ({**h, "__metadata__": {"step": 1}}, d))
    body = json.dumps(header).encode()
    yield "dup_meta_key", build(b'{"__metadata__":{"k":"1","k":"2"},' + body[1:], data)
    if not names:
        return
    name = rng.choice(names)
    info = json.dumps(header[name]).encode()
    key = json.dumps(name).encode()
    yield "dup_tensor", build(body[:-1] + b"," + key + b":" + info + b"}", data)
    yield "dup_field", build(body.replace(b'"dtype": ', b'"dtype": "F32", "dtype": ', 1), data)

    def edit(fn: Callable[[dict[str, Any]], None]) -> bytes:
        def apply(h: dict[str, Any], d: bytes) -> tuple[Any, bytes]:
            h = json.loads(json.dumps(h))
            fn(h[name])
            return h, d

        return _rewrite(raw, apply)

    same = {"F32": "I32", "I32": "U32", "F16": "BF16", "U8": "F8_E4M3", "BOOL": "I8"}
    dtype = header[name]["dtype"]
    yield "same_size_dtype", edit(lambda e: e.update(dtype=same.get(dtype, dtype)))
    other = "I16" if DTYPE_BITS[dtype] != 16 else "F32"
    yield "wrong_dtype_size", edit(lambda e: e.update(dtype=other))
    yield "unknown_dtype", edit(lambda e: e.update(dtype="F128"))
    yield "dtype_map", edit(lambda e: e.update(dtype={dtype: None}))
    yield "extra_field", edit(lambda e: e.update(extra=1))
    yield (
        "entry_as_list",
        _rewrite(raw, lambda h, d: ({**h, name: [h[name][k] for k in entry("", [], 0, 0)]}, d)),
    )
    yield "shape_value", edit(lambda e: e.update(shape=[rng.choice([-1, 1.0, True, 2**64])]))
    yield "shape_grow", edit(lambda e: e.update(shape=[*e["shape"], 2]))
    yield "missing_field", edit(lambda e: e.pop(rng.choice(["dtype", "shape", "data_offsets"])))
    begin, end = header[name]["data_offsets"]
    yield "offsets_shift", edit(lambda e: e.update(data_offsets=[begin + 1, end + 1]))
    yield "offsets_reverse", edit(lambda e: e.update(data_offsets=[end, begin]))

    def gap(h: dict[str, Any], d: bytes) -> tuple[Any, bytes]:
        for k in names[names.index(name) :]:
            b, e = h[k]["data_offsets"]
            h[k]["data_offsets"] = [b + 4, e + 4]
        return h, d + b"\0" * 4

    yield "gap", _rewrite(raw, gap)
    yield "drop_tensor", _rewrite(raw, lambda h, d: ({k: v for k, v in h.items() if k != name}, d))
    yield "reorder", _rewrite(raw, lambda h, d: (dict(reversed(h.items())), d))


def test_differential_against_safetensors(tmp_path: Path) -> None:
    rng = random.Random(20240607)
    results: list[tuple[str, bool, bool]] = []
    cases: list[tuple[str, bytes]] = []
    for i in range(30):
        raw = _valid_file(rng, tmp_path / f"valid{i}.safetensors")
        cases.append(("valid", raw))
        all_mutations = list(_mutations(raw, rng))
        cases += rng.sample(all_mutations, min(8, len(all_mutations)))
    assert len(cases) >= 230
    path = tmp_path / "case.safetensors"
    for kind, raw in cases:
        path.write_bytes(raw)
        lib_ok, lib_info = library_accepts(path)
        ours_ok, ours_info = ours_accepts(path)
        # The required direction: library rejects => we reject (i.e. we accept => it accepts).
        assert lib_ok or not ours_ok, (kind, raw[:200])
        if lib_ok and ours_ok:
            assert ours_info == lib_info, kind
        if lib_ok and not ours_ok:
            assert kind in STRICTER_BY_DESIGN, (kind, raw[:200])
        if kind == "valid":
            assert ours_ok
        results.append((kind, lib_ok, ours_ok))
    kinds = {k for k, _, _ in results}
    assert {"truncate", "append", "gap", "dup_tensor", "nan"} <= kinds
    assert sum(1 for _, lib, ours in results if lib and ours) >= 40  # not vacuous either way
    assert sum(1 for _, lib, ours in results if not lib and not ours) >= 120
