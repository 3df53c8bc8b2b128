"""Read back what W&B wrote in offline mode: the protobuf records of an offline run's ``.wandb`` file.

The file is W&B's 7-byte header (``:W&B``, magic, version), then LevelDB log blocks of 32 KiB: each record a
7-byte header (CRC32, length, type: full, first, middle or last piece) and its bytes; a block's tail shorter than a
header is padding. The records are ``wandb_internal_pb2.Record`` messages.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FILE_HEADER = 7
RECORD_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> list[bytes]:
    """The records' bytes of one ``.wandb`` file, pieces joined."""
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", FILE_HEADER
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        piece = data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind == FULL:
            out.append(piece)
        elif kind == FIRST:
            pending = piece
        elif kind == MIDDLE:
            pending += piece
        elif kind == LAST:
            out.append(pending + piece)
        elif kind == 0 and length == 0:  # zero padding at the end of the last block
            break
    return out


def offline_run(path: Path) -> dict:
    """What one offline run file holds: ``history`` (step -> {key: value}), ``summary`` {key: value}, ``config``
    {key: value}, and the ``run`` record's id, group, name and tags."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, summary, config, run = {}, {}, {}, {}
    for raw in payloads(path):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            history[int(row.pop("_step"))] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            run = {"id": rec.run.run_id, "group": rec.run.run_group, "name": rec.run.display_name,
                   "tags": list(rec.run.tags), "job_type": rec.run.job_type}
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.run.config.update})
    return {"history": history, "summary": summary, "config": config, "run": run}
