"""Read an offline W&B run's ``.wandb`` file record by record: what W&B would receive on sync.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB
blocks of records, each with a 7-byte header (crc32c, length, type: full/first/middle/last) and a
piece of a serialized ``wandb_internal_pb2.Record``; a record never straddles a block boundary
(the rest of a block shorter than a header is zero padding).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, "not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:  # zero fill at the end of a block or file
            pos += left_in_block
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        else:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        out.append(record)
        pending = b""
    return out


def history(path: Path) -> list[dict[str, Any]]:
    """Every logged row: {key: decoded JSON value}, with ``_step``."""
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def config(path: Path) -> dict[str, Any]:
    """The run's config as W&B holds it (keys of the last update win)."""
    out: dict[str, Any] = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "config":
            for item in r.config.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


def of_type(path: Path, kind: str) -> list[Any]:
    """Records of one type: ``metric``, ``artifact``, ``exit``, ``preempting``, ..."""
    return [getattr(r, kind) for r in records(path) if r.WhichOneof("record_type") == kind]
