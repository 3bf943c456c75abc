"""The order model and its seeded, chunked generator (no I/O).

Each chunk draws from its own ``random.Random`` seeded by (run seed, chunk start), so any
chunk can be made again on its own, byte for byte, without generating the ones before it.
Memory is bounded by one chunk whatever the quantity. A large run makes the same chunks with
numpy when it is installed (:func:`chunk_maker`, :func:`vectorized_chunk`).

Order ids are UUIDs whose leading bits grow with ``seq`` (RFC 9562 version 8, laid out like
a version 7 UUID with the run's seed in place of the clock). Random version-4 ids scatter
every insert across the unique ``id`` index, so each committed chunk rewrites nearly all of
it: measured on SQLite at 1M orders, 16.5 s of inserts with v4 ids against 6.3 s with
ordered ones, and the gap grows with N. MongoDB's B-tree indexes gain the same way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

from harness.config import TIERS

VIP, NORMAL = "VIP", "NORMAL"
PRIORITIES: tuple[str, ...] = (VIP, NORMAL)
PENDING, PROCESSED = "pendente", "processado"

FIRST_NAMES = (
    "Ana", "Bruno", "Carla", "Diego", "Elisa", "Felipe", "Gabriela", "Heitor", "Isabela",
    "João", "Karina", "Lucas", "Mariana", "Nicolas", "Olívia", "Pedro", "Quitéria", "Rafael",
    "Sofia", "Tiago", "Úrsula", "Vitor", "Wesley", "Yasmin", "Zeca",
)
LAST_NAMES = (
    "Almeida", "Barbosa", "Cardoso", "Dias", "Esteves", "Ferreira", "Gomes", "Hashimoto",
    "Ito", "Jardim", "Lima", "Moreira", "Nunes", "Oliveira", "Pereira", "Queiroz", "Ribeiro",
    "Silva", "Teixeira", "Uchoa", "Vieira", "Xavier", "Zanetti",
)
INITIAL_NOTE = "Pedido recebido"


def priority_of(tier: str) -> str:
    """DIAMANTE customers are VIP; every other tier is NORMAL."""
    return VIP if tier == "DIAMANTE" else NORMAL


def processed_note(priority: str) -> str:
    """The ``observacoes`` an order carries once processed."""
    return f"Processado com prioridade {priority}"


class Order(NamedTuple):
    """One order as generated. ``seq`` is its position in the run (0-based), the key jobs use.

    A plain tuple so a chunk goes to ``sqlite3.executemany`` with no copying.
    """

    seq: int
    id: str
    cliente: str
    valor: float
    tier: str
    priority: str
    observacoes: str
    status: str
    created_at: float


def id_prefix(seed: int) -> int:
    """The 48 leading bits every order id of a run with ``seed`` shares."""
    return random.Random(f"{seed}/id").getrandbits(48)


def order_id(prefix: int, seq: int, noise: int) -> str:
    """A version-8 UUID that sorts by ``seq``.

    Bits, high to low: prefix 48 | version 4 (=8) | seq high 12 | variant 2 (=10) |
    seq low 20 | noise 42. Formatted by hand rather than through uuid.UUID (3x faster).
    """
    value = (
        prefix << 80 | 0x8 << 76 | (seq >> 20) << 64 | 0x2 << 62
        | (seq & 0xFFFFF) << 42 | noise & 0x3FFFFFFFFFF
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


NAMES = tuple(f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES)
_tuple_new = tuple.__new__


def generate_chunk(
    seed: int, start: int, count: int, weights: Sequence[float], created_at: float | None = None
) -> list[Order]:
    """Orders ``start`` .. ``start + count - 1`` of the run with ``seed``.

    ``weights`` gives each tier of :data:`harness.config.TIERS` its relative share.

    This is the coordinator's hot loop (1M orders: 1.2 s, against 1.7 s written plainly):
    the id is :func:`order_id` with its constant head formatted once per chunk, names come
    from a table, and orders are built as plain tuples. The output is byte for byte what
    the plain version gave (``tests/test_orders.py`` checks ids against :func:`order_id`).
    """
    rng = random.Random(f"{seed}/{start}")
    bits = rng.getrandbits
    p = f"{id_prefix(seed):012x}"
    head = f"{p[:8]}-{p[8:]}-8"  # prefix, then the version digit
    nf, nl = len(FIRST_NAMES), len(LAST_NAMES)
    now = time.time() if created_at is None else created_at
    tiers = rng.choices(TIERS, weights=weights, k=count)
    orders: list[Order] = []
    append, names, new = orders.append, NAMES, _tuple_new
    variant = 0x2 << 62
    seq = start
    for tier in tiers:
        r = bits(106)  # 64 bits for the fields below, 42 for the id's noise
        low = f"{variant | (seq & 0xFFFFF) << 42 | (r >> 64) & 0x3FFFFFFFFFF:016x}"
        append(new(Order, (
            seq,
            f"{head}{seq >> 20:03x}-{low[:4]}-{low[4:]}",
            names[(r % nf) * nl + (r >> 8) % nl],
            ((r >> 16) % 999_001 + 1_000) / 100,  # 10.00 .. 10000.00
            tier,
            VIP if tier == "DIAMANTE" else NORMAL,
            INITIAL_NOTE,
            PENDING,
            now,
        )))
        seq += 1
    return orders


# From this many orders a run makes its chunks with numpy (when installed: the worker image
# has no numpy). Loading numpy costs 65-100 ms of the coordinator's start, and the vectorized
# generator saves ~0.8 us an order: it pays from ~100,000 orders, and from 300,000 the 100k
# runs (the BullMQ comparison's size) and the fixed costs' small runs start without it.
VECTORIZE_FROM = 300_000
ChunkMaker = Callable[..., list[Order]]


def chunk_maker(quantity: int) -> ChunkMaker:
    """How a run of ``quantity`` orders makes its chunks: :func:`vectorized_chunk` for a large
    run where numpy is installed, else :func:`generate_chunk`; the same orders either way.
    Call it before forking, so that a forked process inherits numpy loaded."""
    if quantity >= VECTORIZE_FROM and importlib.util.find_spec("numpy") is not None:
        import numpy  # noqa: F401  (loaded here, once)

        return vectorized_chunk
    return generate_chunk


def vectorized_chunk(
    seed: int, start: int, count: int, weights: Sequence[float], created_at: float | None = None
) -> list[Order]:
    """:func:`generate_chunk` with numpy: the same orders, byte for byte, for under half the CPU.

    Why: generation is the largest piece of a run's CPU outside the store (1M orders: 1.4-1.5 s
    in pure Python, without garbage collection), and on a busy machine every process of a run
    takes CPU from the one holding the store's write lock. Vectorized: 0.61-0.65 s.

    How it stays equal (``tests/test_orders.py`` compares it with the plain loop): numpy's
    legacy ``RandomState`` is the same Mersenne Twister as :mod:`random`, seeded the same
    way (``init_by_array`` of the seed string's bytes and SHA-512, as ``random.seed`` does
    with a str), and its doubles are made from two 32-bit words as ``random()`` makes them.
    So the tiers are ``choices``' draws (``random() * total`` against the cumulative weights,
    as ``bisect``), and each order's ``getrandbits(106)`` is the next four words, the last
    shifted right by 22. The fields take that 106-bit number modulo a table size, which is
    done on its 32-bit words (Horner's rule: every partial product stays below 2**64).
    """
    import numpy as np

    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1] + 0.0 if cumulative else 0.0
    if len(cumulative) != len(TIERS) or not 0.0 < total < float("inf"):  # as choices() refuses
        raise ValueError(f"weights must be {len(TIERS)} with a finite total above 0: {weights}")
    rng = np.random.RandomState(_seed_words(f"{seed}/{start}"))
    draws = rng.random_sample(count) * total
    index = np.minimum(np.searchsorted(np.array(cumulative), draws, side="right"), len(TIERS) - 1)
    words = rng.randint(0, 2**32, size=4 * count, dtype=np.uint64).reshape(count, 4)
    r = [words[:, 0], words[:, 1], words[:, 2], words[:, 3] >> np.uint64(22)]  # low word first
    nf, nl = len(FIRST_NAMES), len(LAST_NAMES)
    name = _modulo(r, nf) * np.uint64(nl) + _modulo(_shifted(r, 8), nl)
    valor = (_modulo(_shifted(r, 16), 999_001) + np.uint64(1_000)).astype(np.float64) / 100
    seqs = np.arange(start, start + count, dtype=np.uint64)
    low = (np.uint64(0x2 << 62) | (seqs & np.uint64(0xFFFFF)) << np.uint64(42) | r[2]
           | r[3] << np.uint64(32))  # variant | seq low 20 | noise 42 (r >> 64)
    p = f"{id_prefix(seed):012x}"
    ids = np.empty((count, 36), dtype=np.uint8)
    ids[:, :15] = np.frombuffer(f"{p[:8]}-{p[8:]}-8".encode(), dtype=np.uint8)
    ids[:, 15:18] = _hex_digits(seqs >> np.uint64(20), 3)
    ids[:, [18, 23]] = ord("-")
    digits = _hex_digits(low, 16)
    ids[:, 19:23], ids[:, 24:] = digits[:, :4], digits[:, 4:]
    tiers = np.array(TIERS, dtype=object)[index]
    priorities = np.array([VIP if t == "DIAMANTE" else NORMAL for t in TIERS], dtype=object)[index]
    now = time.time() if created_at is None else created_at
    return list(map(_tuple_new, itertools.repeat(Order), zip(
        range(start, start + count), ids.view("S36").ravel().astype("U36").tolist(),
        np.array(NAMES, dtype=object)[name.astype(np.intp)].tolist(), valor.tolist(),
        tiers.tolist(), priorities.tolist(), itertools.repeat(INITIAL_NOTE),
        itertools.repeat(PENDING), itertools.repeat(now), strict=False)))


def _seed_words(key: str) -> np.ndarray[Any, Any]:
    """The 32-bit words, low first, that ``random.seed(key)`` hands ``init_by_array``."""
    import numpy as np

    data = key.encode()
    n = int.from_bytes(data + hashlib.sha512(data).digest(), "big")
    return np.frombuffer(n.to_bytes((n.bit_length() + 31) // 32 * 4, "little"), dtype="<u4")


def _shifted(words: list[np.ndarray[Any, Any]], bits: int) -> list[np.ndarray[Any, Any]]:
    """The 32-bit words (low first) of the number ``words`` hold, shifted right by ``bits``."""
    import numpy as np

    mask, k = np.uint64(0xFFFFFFFF), np.uint64(bits)
    return [(w >> k | nxt << np.uint64(32 - bits)) & mask
            for w, nxt in itertools.pairwise(words)] + [words[-1] >> k]


def _modulo(words: list[np.ndarray[Any, Any]], m: int) -> np.ndarray[Any, Any]:
    """The number ``words`` hold (32-bit words, low first), modulo ``m`` < 2**32."""
    import numpy as np

    base, mod = np.uint64((1 << 32) % m), np.uint64(m)
    acc = np.zeros_like(words[0])
    for w in reversed(words):
        acc = (acc * base + w % mod) % mod
    return acc


def _hex_digits(values: np.ndarray[Any, Any], width: int) -> np.ndarray[Any, Any]:
    """Each value's last ``width`` hex digits, lowercase, as ASCII codes (one row a value)."""
    import numpy as np

    shifts = np.arange(4 * (width - 1), -1, -4, dtype=np.uint64)
    return np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[(values[:, None] >> shifts) & np.uint64(15)]


def seqs_of(
    priority: str, seed: int, quantity: int, chunk_size: int, weights: Sequence[float], page: int
) -> Iterator[list[int]]:
    """The seqs of the run's orders of ``priority`` in order, ``page`` at a time (as the
    store's ``pending_seqs`` pages them), without making the orders: a chunk's tiers are the
    first thing :func:`generate_chunk` draws.

    Why: a run enqueues its NORMAL orders once the VIP ones are done, while the workers
    write to the store: with their seqs paged out of it, that phase took 0.64-0.67 s of a
    1M run on SQLite; drawn again (0.16 s for all 1M orders' tiers), 0.48-0.54 s. Memory
    stays one page."""
    vip, buffer = priority == VIP, list[int]()
    for start in range(0, quantity, chunk_size):
        count = min(chunk_size, quantity - start)
        tiers = random.Random(f"{seed}/{start}").choices(TIERS, weights=weights, k=count)
        buffer.extend(start + i for i, tier in enumerate(tiers) if (tier == "DIAMANTE") == vip)
        while len(buffer) >= page:
            yield buffer[:page]
            del buffer[:page]
    if buffer:
        yield buffer


def generate(
    seed: int, quantity: int, chunk_size: int, weights: Sequence[float], first: int = 0
) -> Iterator[list[Order]]:
    """Stream the run's orders chunk by chunk, from order ``first`` (a chunk boundary)."""
    for start in range(first, quantity, chunk_size):
        yield generate_chunk(seed, start, min(chunk_size, quantity - start), weights)
