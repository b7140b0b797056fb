"""The wire format of openpi's websocket protocol: msgpack with numpy arrays and scalars as tagged maps, as
`openpi_client.msgpack_numpy` (openpi packages/openpi-client) writes and reads them:

    ndarray  -> {b"__ndarray__": True, b"data": raw bytes (C order), b"dtype": dtype.str, b"shape": shape}
    np.generic -> {b"__npgeneric__": True, b"data": item(), b"dtype": dtype.str}

Object, void and complex dtypes are refused both ways: nothing is ever unpickled. Decoding is strict about the map:
a tagged map whose bytes do not fill its shape is an error naming what was found, not a crash in numpy.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("O", "V", "c")  # object, void (structured), complex: not part of the protocol


class CodecError(ValueError):
    """A message that is not a msgpack-numpy payload."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise CodecError(f"cannot send dtype {obj.dtype}: object, structured and complex arrays are not supported")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _dtype(code: Any) -> np.dtype:
    try:
        dtype = np.dtype(code.decode() if isinstance(code, bytes) else code)
    except TypeError as e:
        raise CodecError(f"array dtype {code!r}: not a numpy dtype") from e
    if dtype.kind in _REFUSED_KINDS:
        raise CodecError(f"array dtype {dtype}: object, structured and complex arrays are not supported")
    return dtype


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype, shape = _dtype(obj.get(b"dtype")), obj.get(b"shape")
        data = obj.get(b"data")
        if not isinstance(data, bytes) or not isinstance(shape, (list, tuple)) or \
                not all(isinstance(n, int) and n >= 0 for n in shape):
            raise CodecError("array: expected bytes data and a shape of non-negative ints")
        expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        if len(data) != expected:
            raise CodecError(f"array of {dtype} {tuple(shape)}: expected {expected} bytes, found {len(data)}")
        # a writable copy: the receive buffer is read-only, and torch warns on (and must not write to) such arrays
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if b"__npgeneric__" in obj:
        return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
    return obj


def packb(obj: Any) -> bytes:
    """Python/numpy values -> one msgpack message."""
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes) -> Any:
    """One msgpack message -> Python/numpy values; anything malformed is a CodecError."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except CodecError:
        raise
    except Exception as e:  # msgpack's own errors: truncated data, extra bytes, bad types
        raise CodecError(f"not a msgpack message ({first_line(e)})") from None


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`: what a client is told of an error, in one line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
