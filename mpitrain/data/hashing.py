"""Feature hashing (``--hash-bits B``): a feature name goes to one of ``2**B`` columns, with a
sign, as scikit-learn's ``FeatureHasher`` (``alternate_sign=True``) does.

The hash is MurmurHash3 (x86, 32 bits) of the name's bytes (UTF-8) with seed ``--hash-seed``
(default 0, scikit-learn's), read as a signed 32-bit integer ``h``: the column is
``abs(h) mod 2**B`` and the value is multiplied by ``+1`` when ``h >= 0``, else ``-1`` (the
sign is the hash's top bit, the column its low bits, as Vowpal Wabbit splits one hash).
Only the name and the hash seed decide it, never the rank or ``--seed``: the same file gives
the same columns on any number of ranks, and a saved model stores ``B`` and the seed so
``mpitrain predict`` hashes new rows the same way. The signs make collisions cancel on
average rather than add up (Weinberger et al., 2009).
"""

from __future__ import annotations

import numba
import numpy as np

#: Largest --hash-bits: abs(h) of a signed 32-bit hash has 31 bits.
MAX_HASH_BITS = 31
#: Largest --hash-seed: MurmurHash3's seed is an unsigned 32-bit integer.
MAX_HASH_SEED = 2**32 - 1

_MASK = 0xFFFFFFFF
_C1, _C2 = 0xCC9E2D51, 0x1B873593


@numba.njit(cache=True, inline="always")
def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


@numba.njit(cache=True)
def murmurhash3_32(buf: np.ndarray, start: int, end: int, seed: int) -> int:
    """MurmurHash3_x86_32 of the bytes ``buf[start:end]`` (uint8) as a signed 32-bit
    value, equal to ``sklearn.utils.murmurhash3_32(bytes, seed)``."""
    h = seed & _MASK
    n = end - start
    stop = start + (n // 4) * 4
    i = start
    while i < stop:
        k = (np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8) | (np.int64(buf[i + 2]) << 16)
             | (np.int64(buf[i + 3]) << 24))
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
        i += 4
    rest = end - stop
    if rest > 0:
        k = np.int64(0)
        if rest == 3:
            k ^= np.int64(buf[stop + 2]) << 16
        if rest >= 2:
            k ^= np.int64(buf[stop + 1]) << 8
        k ^= np.int64(buf[stop])
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h - (1 << 32) if h >= (1 << 31) else h


@numba.njit(cache=True, inline="always")
def hashed_column(h: int, bits: int) -> int:
    """The column of a signed 32-bit hash: ``abs(h) mod 2**bits``."""
    return (h if h >= 0 else -h) & ((1 << bits) - 1)


def hash_name(name: str | bytes, *, bits: int, seed: int = 0) -> tuple[int, float]:
    """The column and sign of one feature name (str names as their UTF-8 bytes)."""
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    h = murmurhash3_32(np.frombuffer(raw, dtype=np.uint8), 0, len(raw), seed)
    return int(hashed_column(h, bits)), (1.0 if h >= 0 else -1.0)


def check_hashing(bits: int, seed: int) -> str | None:
    """A message when ``--hash-bits`` / ``--hash-seed`` are out of range, else None."""
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not (
            bits == 0 or 1 <= bits <= MAX_HASH_BITS):
        return f"--hash-bits must be 0 (off) or from 1 to {MAX_HASH_BITS} (got {bits!r})"
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not (
            0 <= seed <= MAX_HASH_SEED):
        return f"--hash-seed must be an integer from 0 to {MAX_HASH_SEED} (got {seed!r})"
    return None
