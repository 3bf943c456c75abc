"""The generator: seeded, chunk-independent, with the original's fields and mapping."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from harness.config import TIERS
from harness.orders import (
    NORMAL,
    PENDING,
    VIP,
    Order,
    generate,
    generate_chunk,
    priority_of,
    seqs_of,
)

EQUAL = [1.0, 1.0, 1.0, 1.0]


def _content(orders: list) -> list:
    """Everything but createdAt, which is the wall clock at generation."""
    return [o[:-1] for o in orders]


def test_same_seed_same_orders_other_seed_other_orders() -> None:
    a = [o for chunk in generate(7, 5_000, 1_000, EQUAL) for o in chunk]
    b = [o for chunk in generate(7, 5_000, 1_000, EQUAL) for o in chunk]
    c = [o for chunk in generate(8, 5_000, 1_000, EQUAL) for o in chunk]
    assert _content(a) == _content(b)
    assert {o.id for o in a}.isdisjoint(o.id for o in c)


def test_a_chunk_can_be_made_again_on_its_own() -> None:
    chunks = list(generate(3, 3_500, 1_000, EQUAL))
    assert [len(c) for c in chunks] == [1_000, 1_000, 1_000, 500]
    again = list(generate(3, 3_500, 1_000, EQUAL, first=2_000))
    assert _content(again[0]) == _content(chunks[2])
    assert _content(again[1]) == _content(chunks[3])


def test_fields_and_seqs() -> None:
    orders = [o for chunk in generate(1, 20_000, 3_000, EQUAL) for o in chunk]
    assert [o.seq for o in orders] == list(range(20_000))
    assert len({o.id for o in orders}) == 20_000
    assert [o.id for o in orders] == sorted(o.id for o in orders)  # ids grow with seq
    for o in orders[:500]:
        assert uuid.UUID(o.id).version == 8 and uuid.UUID(o.id).variant == uuid.RFC_4122
        assert 10 <= o.valor <= 10_000 and round(o.valor, 2) == o.valor
        assert o.tier in TIERS and o.status == PENDING and o.observacoes
        assert len(o.cliente.split()) == 2


def test_only_diamante_is_vip() -> None:
    assert [priority_of(t) for t in TIERS] == [NORMAL, NORMAL, NORMAL, VIP]
    orders = generate_chunk(5, 0, 10_000, EQUAL)
    assert all((o.priority == VIP) == (o.tier == "DIAMANTE") for o in orders)


def test_tier_mix_is_followed() -> None:
    counts = Counter(o.tier for o in generate_chunk(5, 0, 40_000, [0, 0, 3, 1]))
    assert set(counts) == {"OURO", "DIAMANTE"}
    assert 0.22 < counts["DIAMANTE"] / 40_000 < 0.28
    assert not [o for o in generate_chunk(5, 0, 5_000, [1, 1, 1, 0]) if o.priority == VIP]


def test_ids_keep_their_seq_order_across_the_32_bit_range() -> None:
    from harness.orders import id_prefix, order_id

    prefix = id_prefix(1)
    seqs = [0, 1, 2**20 - 1, 2**20, 2**20 + 1, 123_456_789, 2**32 - 1]
    ids = [order_id(prefix, seq, noise=2**42 - 1 - seq % 7) for seq in seqs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(i.startswith(ids[0][:13]) for i in ids)  # the run's 48-bit prefix
    assert {uuid.UUID(i).version for i in ids} == {8}
    assert id_prefix(1) != id_prefix(2)


def _plain_chunk(seed: int, start: int, count: int, weights: list[float]) -> list[Order]:
    """generate_chunk as first written (one order_id call per order): the reference the
    optimised loop must match byte for byte."""
    import random

    from harness.orders import FIRST_NAMES, INITIAL_NOTE, LAST_NAMES, id_prefix, order_id

    rng = random.Random(f"{seed}/{start}")
    prefix = id_prefix(seed)
    tiers = rng.choices(TIERS, weights=weights, k=count)
    out = []
    for i, tier in enumerate(tiers):
        r = rng.getrandbits(106)
        out.append(Order(start + i, order_id(prefix, start + i, r >> 64),
                         f"{FIRST_NAMES[r % len(FIRST_NAMES)]} {LAST_NAMES[(r >> 8) % len(LAST_NAMES)]}",
                         ((r >> 16) % 999_001 + 1_000) / 100, tier,
                         VIP if tier == "DIAMANTE" else NORMAL, INITIAL_NOTE, PENDING, 5.0))
    return out


@pytest.mark.parametrize("start", [0, 10_000, 2**20 - 700, 7 * 2**20 + 3])
def test_the_fast_generator_gives_exactly_the_plain_generators_orders(start: int) -> None:
    weights = [4.0, 3.0, 2.0, 1.0]
    assert generate_chunk(11, start, 1_500, weights, created_at=5.0) == _plain_chunk(
        11, start, 1_500, weights)


@pytest.mark.parametrize("priority", [VIP, NORMAL])
def test_seqs_of_a_priority_are_the_generators_paged_like_the_store(priority: str) -> None:
    """What a run enqueues without reading the store: the seqs of each priority that the
    generator makes, in order, in pages of the given size (the last one shorter)."""
    weights = [3.0, 1.0, 1.0, 2.0]
    made = [o.seq for chunk in generate(11, 23_456, 1_000, weights) for o in chunk
            if o.priority == priority]
    pages = list(seqs_of(priority, 11, 23_456, 1_000, weights, page=700))
    assert [s for page in pages for s in page] == made
    assert all(len(page) == 700 for page in pages[:-1]) and 0 < len(pages[-1]) <= 700


@pytest.mark.parametrize(("seed", "start", "count", "weights"), [
    (11, 0, 1_500, [4.0, 3.0, 2.0, 1.0]),
    (11, 2**20 - 700, 1_500, [4.0, 3.0, 2.0, 1.0]),  # seq crosses into the id's next 12 bits
    (5, 2**32 - 1_000, 1_000, EQUAL),  # the last seqs a run can have
    (0, 7 * 2**20 + 3, 333, [0, 0, 3, 1]),  # a tier never drawn
    (-3, 10, 1, [0.1, 0.2, 0.3, 0.4]),
    (9, 5, 0, EQUAL),
    (2**40, 990_000, 10_000, [5.0, 10.0, 25.0, 60.0]),
])
def test_the_vectorized_generator_gives_exactly_the_plain_generators_orders(
        seed: int, start: int, count: int, weights: list[float]) -> None:
    """numpy's Mersenne Twister, seeded as `random` seeds it, and the fields' arithmetic on
    32-bit words: the same orders, byte for byte, as the reference loop."""
    from harness.orders import vectorized_chunk

    made = vectorized_chunk(seed, start, count, weights, created_at=5.0)
    assert made == _plain_chunk(seed, start, count, weights)
    assert all(type(o) is Order for o in made)


def test_a_large_run_makes_its_chunks_with_numpy_unless_it_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from harness.orders import VECTORIZE_FROM, chunk_maker, vectorized_chunk

    assert chunk_maker(VECTORIZE_FROM) is vectorized_chunk
    assert chunk_maker(VECTORIZE_FROM - 1) is generate_chunk  # numpy's load would not pay
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numpy" else found(name, *a))
    assert chunk_maker(10 * VECTORIZE_FROM) is generate_chunk  # the worker image: no numpy


@pytest.mark.parametrize("weights", [[0, 0, 0, 0], [1.0, 2.0], [1, 1, 1, float("inf")]])
def test_both_generators_refuse_weights_that_choices_refuses(weights: list[float]) -> None:
    from harness.orders import vectorized_chunk

    for make in (generate_chunk, vectorized_chunk):
        with pytest.raises(ValueError):
            make(1, 0, 10, weights)
