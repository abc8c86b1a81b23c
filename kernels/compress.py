"""16-bit encodings of float32 gradients for reduced-precision transport (``--compress``).

Words are ``uint16`` arrays holding IEEE binary16 (``FP16``) or bfloat16 (``BF16``) bit
patterns, both rounded to nearest, ties to even, like ``numpy.float16`` and PyTorch's
``bfloat16`` casts. :func:`encode` multiplies by ``scale`` before encoding and
:func:`decode` by ``unscale`` after decoding; :func:`decode_add` takes no factor and adds
the decoded values as they are, still scaled (the compressed reduction sums in the scaled
domain and unscales once, in its final :func:`decode`). The caller passes powers of two so
the scaling itself is exact. binary16 overflows to inf above 65504 (after scaling) and keeps
about 3.3 significant digits; bfloat16 has float32's range and about 2.4 digits. NaN stays
NaN. Accumulation (:func:`decode_add`) is float32.

Argument types: ``src``/``dst``/``acc`` C-contiguous 1-D float32, ``words`` C-contiguous 1-D
uint16, ``codec`` a Python int, ``scale``/``unscale`` Python floats. Nothing allocates.
"""

from __future__ import annotations

import numpy as np
from numba import njit

FP16 = 1
BF16 = 2
CODECS = {"fp16": FP16, "bf16": BF16}

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}


@njit(**_JIT)
def _to_bf16(x):
    bits = np.float32(x).view(np.uint32)
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: keep it quiet NaN
        return np.uint16((bits >> np.uint32(16)) | np.uint32(0x40))
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16(rounded >> np.uint32(16))


@njit(**_JIT)
def _to_fp16(x):
    """Branch-free (so the loops vectorise): every case is computed, one is selected."""
    bits = np.uint32(np.float32(x).view(np.uint32))
    sign = (bits >> np.uint32(16)) & np.uint32(0x8000)
    a = bits & np.uint32(0x7FFFFFFF)
    # normal: rebias the exponent, round the 13 dropped bits to nearest even (a carry
    # moves into the exponent, up to inf)
    normal = (a + np.uint32(0xC8000FFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    # below 2^-14: subnormal m * 2^-24, m rounded to nearest even (1024 is the first normal)
    tiny = np.uint32(np.float32(x).view(np.uint32) & np.uint32(0x7FFFFFFF)).view(np.float32)
    tiny = tiny if tiny < np.float32(6.103515625e-05) else np.float32(6.103515625e-05)
    # adding 2^23 rounds to an integer (nearest even) held in the low mantissa bits
    sub = np.uint32(np.float32(tiny * np.float32(16777216.0) + np.float32(8388608.0))
                    .view(np.uint32)) - np.uint32(0x4B000000)
    # 65520 and up rounds to inf; NaN stays a quiet NaN
    big = np.uint32(0x7E00) if a > np.uint32(0x7F800000) else np.uint32(0x7C00)
    h = sub if a < np.uint32(0x38800000) else (big if a >= np.uint32(0x47800000) else normal)
    return np.uint16(np.uint32(h & np.uint32(0x7FFF)) | sign)


@njit(**_JIT)
def _from_bf16(w):
    return np.uint32(np.uint32(w) << np.uint32(16)).view(np.float32)


@njit(**_JIT)
def _from_fp16(w):
    """Branch-free decode: normal, subnormal (exact m * 2^-24) and inf/NaN cases."""
    h = np.uint32(w)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    em = h & np.uint32(0x7FFF)
    normal = (em << np.uint32(13)) + np.uint32(0x38000000)
    special = np.uint32(0x7F800000) | ((em & np.uint32(0x3FF)) << np.uint32(13))
    sub = np.float32(np.float32(em) * np.float32(5.9604644775390625e-08)).view(np.uint32)
    bits = sub if em < np.uint32(0x400) else (special if em >= np.uint32(0x7C00) else normal)
    return np.uint32(bits | sign).view(np.float32)


@njit(**_JIT)
def encode(src, words, codec, scale):
    """``words[i] = to16(src[i] * scale)`` for ``i < src.size``."""
    if words.size < src.size:
        raise ValueError("words is shorter than src")
    s = np.float32(scale)
    if codec == BF16:
        for i in range(src.size):
            words[i] = _to_bf16(src[i] * s)
    else:
        for i in range(src.size):
            words[i] = _to_fp16(src[i] * s)


@njit(**_JIT)
def decode(words, dst, codec, unscale):
    """``dst[i] = from16(words[i]) * unscale`` for ``i < dst.size``."""
    if words.size < dst.size:
        raise ValueError("words is shorter than dst")
    s = np.float32(unscale)
    if codec == BF16:
        for i in range(dst.size):
            dst[i] = _from_bf16(words[i]) * s
    else:
        for i in range(dst.size):
            dst[i] = _from_fp16(words[i]) * s


@njit(**_JIT)
def decode_add(words, acc, codec):
    """``acc[i] += from16(words[i])`` in float32 for ``i < acc.size`` (no unscaling)."""
    if words.size < acc.size:
        raise ValueError("words is shorter than acc")
    if codec == BF16:
        for i in range(acc.size):
            acc[i] += _from_bf16(words[i])
    else:
        for i in range(acc.size):
            acc[i] += _from_fp16(words[i])


def warm_up() -> None:
    """Compile or load every specialisation used by :mod:`mpitrain.collectives.compressed`."""
    src = np.linspace(-2.0, 2.0, 8).astype(np.float32)
    words = np.empty(8, dtype=np.uint16)
    for codec in CODECS.values():
        encode(src, words, codec, 1.0)
        decode(words, src, codec, 1.0)
        decode_add(words, src, codec)
