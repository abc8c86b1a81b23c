"""Secure aggregation: the ranks learn the SUM of their messages and nothing else about any
one rank's message.

Protocol (Bonawitz et al. 2017 without the dropout recovery; a rank is one party and holds
the clients it simulates):

1. Setup (once, collective): every rank draws an X25519 key pair from the OS RNG and
   publishes its public key (one ``Allgather`` of 32 bytes per rank). Ranks i and j each
   compute the same shared secret and derive a 256-bit pair key with HKDF-SHA256. A rank
   outside the pair sees only the two public keys, from which the key cannot be computed
   (computational Diffie-Hellman), so it cannot know that pair's masks.
2. Each round: the message (clipped update sum + statistics + stop flag) is encoded as
   fixed-point integers modulo 2^64 (two's complement; the scale is chosen from the clip
   bound so the sum of all ranks cannot overflow). For every other rank j, rank i adds
   (j > i) or subtracts (j < i) the mask ChaCha20(pair key, nonce = round), a fresh
   keystream per round. One ``Allreduce`` (integer sum, wrapping mod 2^64) adds the masked
   messages: every mask appears once with + and once with -, so the masks cancel exactly and
   the integer sum of the encodings remains; it is decoded back to floats.

A single masked message is the encoding plus a uniformly random 64-bit word per slot (when
P >= 2), so on its own it is uniformly distributed whatever the update. Quantisation error:
at most 0.5/scale per slot and rank.

Threat model: honest-but-curious ranks that follow the protocol, and authentic delivery of
the public keys (MPI's transport, no man in the middle). Not covered: a rank that leaves
mid-round (MPI aborts the job; nothing is unmasked), collusion (P-1 colluding ranks learn
the last one's message from the sum, as with any sum), malicious ranks sending bad values
(nothing checks that a masked update is within the clip bound), and what the SUM itself
reveals (add DP noise for that).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from mpi4py import MPI

from ..errors import UserError

KEY_BYTES = 32
INFO = b"mpitrain secure aggregation pair key"
TAIL_SCALE = 2.0**16  # statistics slots: 1/65536 resolution, magnitude up to TAIL_LIMIT
TAIL_LIMIT = 2.0**45


def require_cryptography() -> Any:
    """The ``cryptography`` package, or a UserError naming the extra that provides it."""
    try:
        import cryptography.hazmat.primitives.asymmetric.x25519 as x25519
    except ImportError:
        raise UserError("--secure-agg needs the 'cryptography' package, which is not "
                        "installed (pip install 'mpitrain[secure]')") from None
    return x25519


def payload_scale(bound: float) -> float:
    """Power-of-two fixed-point scale for slots whose SUM over ranks stays within ±bound.

    ``bound · scale <= 2^61`` leaves room for the ranks' rounding and the sign bit.
    """
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"bound must be positive and finite (got {bound})")
    return 2.0 ** math.floor(61 - math.log2(bound))


def encode(values: np.ndarray, scales: np.ndarray, out: np.ndarray,
           scratch: np.ndarray) -> None:
    """``out`` (uint64) = two's complement of rint(values · scales); float64 ``scratch``."""
    np.multiply(values, scales, out=scratch)
    np.rint(scratch, out=scratch)
    np.copyto(out.view(np.int64), scratch, casting="unsafe")


def decode(sums: np.ndarray, scales: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """``out`` = signed(sums) / scales."""
    np.copyto(scratch, sums.view(np.int64), casting="unsafe")
    scratch /= scales
    np.copyto(out, scratch, casting="same_kind")


def generate_key_pair() -> tuple[Any, bytes]:
    """A fresh X25519 private key (OS randomness) and its raw 32-byte public key."""
    x25519 = require_cryptography()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = x25519.X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, public


def pair_keys(private: Any, public_keys: list[bytes], me: int) -> dict[int, bytes]:
    """HKDF-SHA256 of the X25519 shared secret with every other party (local)."""
    x25519 = require_cryptography()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    keys = {}
    for peer, public in enumerate(public_keys):
        if peer == me:
            continue
        shared = private.exchange(x25519.X25519PublicKey.from_public_bytes(public))
        low, high = min(me, peer), max(me, peer)
        info = INFO + low.to_bytes(4, "little") + high.to_bytes(4, "little")
        keys[peer] = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                          info=info).derive(shared)
    return keys


def keystream(key: bytes, round_index: int, out: np.ndarray, zeros: np.ndarray) -> None:
    """Fill ``out`` (uint64) with ChaCha20(key, nonce = round) output (the pair's mask)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    nonce = (0).to_bytes(4, "little") + round_index.to_bytes(8, "little") + bytes(4)
    encryptor = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
    encryptor.update_into(zeros[:out.nbytes], out.view(np.uint8))


class PairwiseMasks:
    """This party's pair keys; :meth:`apply` adds its signed masks of one round."""

    def __init__(self, keys: dict[int, bytes], me: int, length: int) -> None:
        self.keys = keys
        self.me = me
        self._mask = np.empty(length, dtype=np.uint64)
        self._zeros = np.zeros(length * 8, dtype=np.uint8)

    def apply(self, encoded: np.ndarray, round_index: int) -> None:
        """``encoded += Σ_{j>me} mask_j − Σ_{j<me} mask_j`` (mod 2^64, in place)."""
        mask = self._mask[:encoded.size]
        for peer, key in self.keys.items():
            keystream(key, round_index, mask, self._zeros)
            if peer > self.me:
                encoded += mask
            else:
                encoded -= mask


def agree_pair_keys(comm: MPI.Comm, length: int) -> PairwiseMasks:
    """Collective: X25519 key agreement between every pair of ranks (public keys only
    cross the network: one ``Allgather`` of 32 bytes per rank)."""
    private, public = generate_key_pair()
    mine = np.frombuffer(public, dtype=np.uint8).copy()
    everyone = np.empty((comm.Get_size(), KEY_BYTES), dtype=np.uint8)
    comm.Allgather([mine, MPI.BYTE], [everyone, MPI.BYTE])
    publics = [row.tobytes() for row in everyone]
    return PairwiseMasks(pair_keys(private, publics, comm.Get_rank()), comm.Get_rank(), length)


class SecureSum:
    """Collective sum of a float message in which no rank's own message is revealed."""

    def __init__(self, comm: MPI.Comm, *, scales: np.ndarray, limits: np.ndarray) -> None:
        self.comm = comm
        self.scales = np.asarray(scales, dtype=np.float64)
        self.limits = np.asarray(limits, dtype=np.float64)
        n = len(self.scales)
        self.encoded = np.empty(n, dtype=np.uint64)
        self.scratch = np.empty(n, dtype=np.float64)
        self.masks = agree_pair_keys(comm, n)

    @property
    def nbytes(self) -> int:
        """Bytes of the integer message of one round."""
        return self.encoded.nbytes

    def reduce(self, message: np.ndarray, round_index: int) -> None:
        """Replace ``message`` by the sum over ranks (one integer ``Allreduce``)."""
        # NaN/inf cannot be encoded: they become the limit, which the caller can detect
        np.nan_to_num(message, copy=False, nan=np.finfo(message.dtype).max)
        np.clip(message, -self.limits, self.limits, out=message)
        encode(message, self.scales, self.encoded, self.scratch)
        self.masks.apply(self.encoded, round_index)
        self.comm.Allreduce(MPI.IN_PLACE, [self.encoded, MPI.UINT64_T], op=MPI.SUM)
        decode(self.encoded, self.scales, message, self.scratch)
