"""Reading a GGUF file's header: its metadata, and whether the file is cut short before llama.cpp loads it.

llama.cpp refuses such a file with only "Failed to load model" (its reason goes to a log
that ``verbose=False`` silences), and only when the model is first used. The header
(metadata, then one entry per tensor with its offset into the data section) says how long
the file must at least be: past the start of its last tensor. Layout:
https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (versions 2 and 3).
"""

from __future__ import annotations

import struct
from typing import IO, Any

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
STRING, ARRAY = 8, 9
# GGUF value type -> struct format, for the fixed-size types
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Truncated(Exception):
    """The file ends inside its header."""


class _Reader:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) < size:
            raise Truncated
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        return self.take(self.scalar("Q"))

    def value(self, kind: int) -> Any:
        if kind in SCALARS:
            return self.scalar(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind != ARRAY:
            raise ValueError(f"unknown metadata type {kind}")
        item, count = self.scalar("I"), self.scalar("Q")
        if item in SCALARS:  # skipped in one read: token scores and types run to 100k entries
            self.take(count * struct.calcsize(SCALARS[item]))
        else:
            for _ in range(count):
                self.value(item)
        return None


def _counts(reader: _Reader) -> tuple[int, int] | None:
    """The tensor and metadata entry counts after the magic and version; None for a version this cannot read."""
    if reader.take(4) != MAGIC:
        raise ValueError("no GGUF magic")
    if reader.scalar("I") not in VERSIONS:
        return None
    return reader.scalar("Q"), reader.scalar("Q")


def metadata(handle: IO[bytes]) -> dict[str, Any]:
    """The header's metadata: numbers, booleans and strings (decoded); arrays are left out.

    Raises ``Truncated`` or ``ValueError`` as ``required_size`` does, and ``ValueError`` for a version it cannot read.
    """
    reader = _Reader(handle)
    counts = _counts(reader)
    if counts is None:
        raise ValueError("unsupported GGUF version")
    found: dict[str, Any] = {}
    for _ in range(counts[1]):
        key, kind = reader.string().decode("utf-8", "replace"), reader.scalar("I")
        value = reader.value(kind)
        if value is not None:
            found[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return found


def required_size(handle: IO[bytes]) -> int | None:
    """How long a complete file with this header must at least be; None for a version this cannot read.

    Raises ``Truncated`` when the file ends inside its header, ``ValueError`` when the header is garbled.
    """
    reader = _Reader(handle)
    counts = _counts(reader)
    if counts is None:
        return None
    tensors, entries = counts
    alignment = DEFAULT_ALIGNMENT
    for _ in range(entries):
        key, kind = reader.string(), reader.scalar("I")
        value = reader.value(kind)
        if key == b"general.alignment" and isinstance(value, int):
            alignment = value or DEFAULT_ALIGNMENT
    last = -1
    for _ in range(tensors):
        reader.string()
        dims = reader.scalar("I")
        reader.take(8 * dims)
        reader.scalar("I")  # the tensor's type
        last = max(last, reader.scalar("Q"))
    start = -(-handle.tell() // alignment) * alignment  # the data section begins aligned
    return start + last + 1
