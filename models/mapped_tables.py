"""`tensors.npz` laid out to be memory-mapped: the tables every worker shares (issue 21).

An `.npz` is a zip of `.npy` members; `np.savez` stores them uncompressed, so a member's
array is a plain run of bytes inside the file and can be mapped read-only instead of read.
The writer here (`write_tables`) places every member's array data at a page boundary (the
zip local header's extra field pads it), so that

- the loader maps each table with `np.memmap` (`map_tables`): N uvicorn workers share the
  page cache's one copy instead of holding N private ones;
- `scorer.onnx` can name the item table as ONNX external data at that offset
  (`member_extent`), and ONNX Runtime reads it from the same pages.

The file stays an ordinary `.npz` (`np.load` reads it as before), so the artifact format is
unchanged: an older relrec reads a new version, and a version written by `np.savez` (before
issue 21) is still mapped where its members happen to be aligned, read into memory where
not. numpy only (no torch), for the service.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["ALIGN", "map_members", "map_tables", "member_extent", "write_tables"]

ALIGN = 4096  # a page: mmap offsets and ONNX Runtime's mapped external data want it
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_ZIP64_EXTRA = 20  # the zip64 extra field zipfile writes with force_zip64
_PAD_ID = 0x7272  # extra-field id of the padding ("rr"): readers skip unknown ids


def write_tables(path: Path, tables: dict[str, np.ndarray]) -> None:
    """Write `tables` as an uncompressed `.npz` whose array data start on ALIGN boundaries."""
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED,
                                                  allowZip64=True) as zf:
        for name, array in tables.items():
            array = np.ascontiguousarray(array)
            header = _npy_header(array)
            member = f"{name}.npy"
            info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            start = raw.tell() + _LOCAL_HEADER + len(member.encode()) + _ZIP64_EXTRA + 4
            pad = (-(start + len(header))) % ALIGN
            info.extra = struct.pack("<HH", _PAD_ID, pad) + b"\0" * pad
            with zf.open(info, "w", force_zip64=True) as out:
                out.write(header)
                out.write(array.reshape(-1).view(np.uint8).data if array.size else b"")


def _npy_header(array: np.ndarray) -> bytes:
    """The `.npy` magic and header of `array` (version 1.0, padded to 64 bytes by numpy)."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": array.shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def member_extent(path: Path, name: str) -> tuple[int, int, tuple[int, ...], np.dtype]:
    """(offset, length, shape, dtype) of member `name`'s array data inside the `.npz`.

    Raises ValueError when the member is compressed or Fortran-ordered (it cannot be mapped).
    """
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{name} is compressed")
        f.seek(info.header_offset)
        local = f.read(_LOCAL_HEADER)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"{name}: no zip local header at its offset")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        data = info.header_offset + _LOCAL_HEADER + name_len + extra_len
        f.seek(data)
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if fortran and len(shape) > 1:
            raise ValueError(f"{name} is stored in Fortran order")
        offset = f.tell()
    return offset, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, tuple(shape), dtype


def map_tables(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Each member mapped read-only, or None when one cannot be (compressed, unaligned, not
    float32): the caller then reads the file as before."""
    out = map_members(path, names)
    if out is None or any(a.dtype != np.float32 for a in out.values()):
        return None
    return out


def map_members(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Each member, of any dtype, mapped read-only; None when one is not page-aligned (a
    file this module did not write)."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        offset, length, shape, dtype = member_extent(path, name)
        if offset % ALIGN:
            return None
        if length == 0:
            out[name] = np.zeros(shape, dtype)
            continue
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        out[name] = mapped.view(np.ndarray)  # a plain array over the map (no memmap subclass)
    return out
