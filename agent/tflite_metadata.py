"""What a .tflite model's own metadata says about its input: the normalisation (mean, std)
that Model Maker and the TFLite metadata writer record for float-input models.

The metadata is a second flatbuffer (schema ``metadata_schema.fbs``, file identifier
``M001``) stored in one of the model's buffers, named ``TFLITE_METADATA`` in the model's
``metadata`` list. Only the fields needed here are read, with the ``flatbuffers`` runtime's
table reader and the field numbers of the two published schemas (they are append-only, so
the numbers hold for every version):

    Model          4 buffers, 6 metadata            Metadata        0 name, 1 buffer
    Buffer         0 data, 1 offset, 2 size         ModelMetadata   3 subgraph_metadata
    SubGraphMetadata  2 input_tensor_metadata       TensorMetadata  4 process_units
    ProcessUnit    0 options_type, 1 options        NormalizationOptions  0 mean, 1 std

(``options_type`` 1 is NormalizationOptions.) No tflite-support package is needed, which
does not install on the Pi's Python.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from flatbuffers import number_types as nt
from flatbuffers.table import Table

METADATA_NAME = b"TFLITE_METADATA"
NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions


class MetadataError(ValueError):
    """The model's metadata is there but cannot be read."""


@dataclass(frozen=True, slots=True)
class Normalization:
    """The model sees (pixel - mean) / std, per channel (or one value for all)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def _root(buf: bytes | memoryview, pos: int = 0) -> Table:
    return Table(buf, pos + struct.unpack_from("<I", buf, pos)[0])


def _field(t: Table, n: int) -> int:
    return t.Offset(4 + 2 * n)


def _tables(t: Table, n: int) -> list[Table]:
    o = _field(t, n)
    if not o:
        return []
    start = t.Vector(o)
    return [Table(t.Bytes, t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]


def _floats(t: Table, n: int) -> tuple[float, ...]:
    o = _field(t, n)
    if not o:
        return ()
    start = t.Vector(o)
    return tuple(t.Get(nt.Float32Flags, start + 4 * i) for i in range(t.VectorLen(o)))


def _metadata_bytes(model: bytes) -> bytes | None:
    """The TFLITE_METADATA buffer's bytes, or None when the model has none."""
    root = _root(model)
    buffers = _tables(root, 4)
    for meta in _tables(root, 6):
        o = _field(meta, 0)
        if not o or meta.String(o + meta.Pos) != METADATA_NAME:
            continue
        index = meta.Get(nt.Uint32Flags, meta.Pos + _field(meta, 1))
        if index >= len(buffers):
            raise MetadataError(f"metadata names buffer {index} of {len(buffers)}")
        b = buffers[index]
        o = _field(b, 0)
        if o:  # stored inside the flatbuffer
            start = b.Vector(o)
            return bytes(model[start:start + b.VectorLen(o)])
        off, size = _field(b, 1), _field(b, 2)
        if off and size:  # stored after it (models over 2 GB, or so written)
            at = b.Get(nt.Uint64Flags, b.Pos + off)
            return bytes(model[at:at + b.Get(nt.Uint64Flags, b.Pos + size)])
        return None
    return None


def input_normalization(path: Path) -> Normalization | None:
    """The first input's NormalizationOptions from the model's metadata, or None if the
    model records none. A metadata block that is there but broken raises MetadataError."""
    model = path.read_bytes()
    try:
        meta = _metadata_bytes(model)
        if meta is None:
            return None
        root = _root(meta)
        for sub in _tables(root, 3)[:1]:
            for tensor in _tables(sub, 2)[:1]:
                for unit in _tables(tensor, 4):
                    o = _field(unit, 0)
                    if not o or unit.Get(nt.Uint8Flags, unit.Pos + o) != NORMALIZATION:
                        continue
                    t = Table(unit.Bytes, 0)
                    unit.Union(t, _field(unit, 1))
                    mean, std = _floats(t, 0), _floats(t, 1)
                    if not mean or not std or any(s == 0 for s in std):
                        raise MetadataError(f"normalisation mean {mean} std {std}")
                    return Normalization(mean, std)
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise MetadataError(f"unreadable metadata ({e})") from e
    return None
