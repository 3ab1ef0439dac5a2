"""Deterministic, Klaviyo-looking identifiers and the hash that drives all synthesis.

Everything random in the account comes from ``mix(seed, stream, index)``, a
vectorised splitmix64: the same (seed, stream, index) always gives the same
64 bits, so any attribute of any row can be recomputed on demand instead of
stored. Profile and event ids are ULIDs (48-bit ms time + 80 bits) whose low
bits carry the row index, so an id maps back to its row without a lookup table.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(CROCKFORD)}
SHORT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_U64 = np.uint64
_MASK40 = (1 << 40) - 1


def mix(seed: int, stream: int, index: npt.ArrayLike) -> np.ndarray:
    """64 well-mixed bits per index (numpy uint64 array, or 0-d for a scalar)."""
    x = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x * _U64(0x9E3779B97F4A7C15) + _U64((seed * 0x632BE59BD9B4E019 + stream * 0x85EBCA77C2B2AE63) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def unit(seed: int, stream: int, index: npt.ArrayLike) -> np.ndarray:
    """Uniform floats in [0, 1) from ``mix``."""
    return (mix(seed, stream, index) >> _U64(11)).astype(np.float64) / float(1 << 53)


def choice(seed: int, stream: int, index: npt.ArrayLike, n: int) -> np.ndarray:
    """Uniform ints in [0, n)."""
    return (mix(seed, stream, index) % _U64(max(n, 1))).astype(np.int64)


#: All 1024 two-digit strings: ids are rendered for every record of every page, and
#: encoding two digits per step halves the emulator's hottest loop.
_PAIRS = [CROCKFORD[i >> 5] + CROCKFORD[i & 31] for i in range(1024)]


def encode_crockford(value: int, width: int) -> str:
    """``width`` base-32 digits of ``value`` (its low width*5 bits), Crockford alphabet."""
    parts = [CROCKFORD[(value >> ((width - 1) * 5)) & 31]] if width % 2 else []
    parts.extend(_PAIRS[(value >> shift) & 1023] for shift in range((width // 2 - 1) * 10, -1, -10))
    return "".join(parts)


def decode_crockford(text: str) -> int | None:
    value = 0
    for c in text:
        v = _CROCKFORD_VALUE.get(c)
        if v is None:
            return None
        value = value * 32 + v
    return value


def index_key(seed: int, stream: int) -> int:
    """The 40-bit key XORed into a ULID's low bits (hides the plain row index)."""
    return int(mix(seed, stream + 1000, 0)) & _MASK40


def ulid(ms: int, tag: int, index: int, key: int) -> str:
    """ULID text: 48-bit ms time, 40 'random' bits (tag), 40 bits of index ^ key."""
    low80 = ((tag & _MASK40) << 40) | ((index ^ key) & _MASK40)
    return encode_crockford(ms & ((1 << 48) - 1), 10) + encode_crockford(low80, 16)


_ALPHABET = np.frombuffer(CROCKFORD.encode(), dtype=np.uint8)
_SHIFTS_48 = np.arange(45, -1, -5, dtype=np.uint64)  # 10 digits of the 48-bit time
_SHIFTS_40 = np.arange(35, -1, -5, dtype=np.uint64)  # 8 digits of a 40-bit half


def ulids(ms: npt.ArrayLike, tag: npt.ArrayLike, index: npt.ArrayLike, key: int) -> np.ndarray:
    """``ulid`` for whole arrays at once, as fixed-width ASCII (numpy ``S26``).

    Pages render up to 2000 ids; building each string digit by digit in Python
    was the emulator's hottest loop. Here every digit of every id is one numpy
    shift-and-mask, the digits index the alphabet as bytes, and the (n, 26)
    byte matrix is viewed as n 26-byte strings. 40-bit halves are a whole
    number of digits, so the tag and index parts encode independently.
    """
    ms = np.asarray(ms).astype(np.uint64) & _U64((1 << 48) - 1)
    tag = np.asarray(tag).astype(np.uint64) & _U64(_MASK40)
    low = (np.asarray(index).astype(np.uint64) ^ _U64(key)) & _U64(_MASK40)
    digits = np.empty((len(ms), 26), dtype=np.uint8)
    digits[:, :10] = (ms[:, None] >> _SHIFTS_48) & _U64(31)
    digits[:, 10:18] = (tag[:, None] >> _SHIFTS_40) & _U64(31)
    digits[:, 18:] = (low[:, None] >> _SHIFTS_40) & _U64(31)
    return np.ascontiguousarray(_ALPHABET[digits]).view("S26").ravel()


def ulid_index(text: str, key: int) -> int | None:
    """Row index carried by a ULID made by ``ulid`` (None when malformed)."""
    if len(text) != 26:
        return None
    low80 = decode_crockford(text[10:])
    if low80 is None:
        return None
    return (low80 & _MASK40) ^ key


def short_id(seed: int, stream: int, index: int, length: int = 6) -> str:
    """Klaviyo-style short id ('Y6nRLr') for lists, segments, metrics, flows, templates."""
    bits = int(mix(seed, stream, index))
    chars = []
    for _ in range(length):
        chars.append(SHORT_ALPHABET[bits % 62])
        bits //= 62
    return "".join(chars)


def uuid_text(seed: int, stream: int, index: int) -> str:
    """A version-4-shaped UUID string."""
    return uuid_from_bits(int(mix(seed, stream, index)), int(mix(seed, stream + 1, index)))


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLES = np.arange(60, -1, -4, dtype=np.uint64)
#: Which of the 32 hex digits of (hi, lo) land at each of the 36 uuid positions (-1: fixed text).
_UUID_POS = np.array([*range(8), -1, *range(8, 12), -1, -2, *range(13, 16), -1, -3, *range(17, 20), -1, *range(20, 32)])


def uuids(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``uuid_from_bits`` for whole arrays, as ``S36`` (one f-string per event was measurable)."""
    nibbles = np.concatenate([(hi[:, None] >> _NIBBLES) & _U64(15), (lo[:, None] >> _NIBBLES) & _U64(15)], axis=1)
    text = _HEX[nibbles][:, np.maximum(_UUID_POS, 0)]
    text[:, _UUID_POS == -1] = ord("-")
    text[:, _UUID_POS == -2] = ord("4")
    text[:, _UUID_POS == -3] = np.frombuffer(b"89ab", dtype=np.uint8)[nibbles[:, 16:17] % _U64(4)]
    return np.ascontiguousarray(text).view("S36").ravel()


def uuid_from_bits(hi: int, lo: int) -> str:
    h = f"{hi:016x}{lo:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"
