"""One contract, every store: each test here runs on SQLite, on PostgreSQL (a database of
its own on a real server) and on the MongoDB backend (a real server when
HARNESS_TEST_MONGO_URI is set, else the litemongo stand-in; see the test id)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import contract_store_opener

from harness.errors import StaleRun
from harness.inside import latency_apart
from harness.orders import NORMAL, PENDING, PROCESSED, VIP, Order, generate_chunk
from harness.record import BarrierProof, RunRecord
from harness.store import DuplicateOrderError, Fence, Store

EQUAL = [1.0, 1.0, 1.0, 1.0]


def _seqs(orders: list[Order], priority: str) -> list[int]:
    return [o.seq for o in orders if o.priority == priority]


def test_insert_and_read_back(store: Store) -> None:
    orders = generate_chunk(1, 0, 300, EQUAL, created_at=1_700_000_000.25)
    store.insert_orders(orders)
    assert store.count_orders() == 300
    assert store.count_orders(VIP) == len(_seqs(orders, VIP))
    assert store.count_orders(NORMAL, PENDING) == len(_seqs(orders, NORMAL))
    doc = store.get_orders([orders[7].seq])[0]
    o = orders[7]
    assert (doc["seq"], doc["id"], doc["cliente"], doc["tier"], doc["priority"]) == (
        o.seq, o.id, o.cliente, o.tier, o.priority)
    assert doc["valor"] == o.valor and doc["status"] == PENDING
    assert doc["createdAt"] == pytest.approx(1_700_000_000.25, abs=0.001)
    assert doc["processedAt"] is None and doc["worker"] is None


def test_duplicate_ids_are_rejected_and_the_rest_inserted(store: Store) -> None:
    first = generate_chunk(1, 0, 100, EQUAL)
    store.insert_orders(first)
    fresh = generate_chunk(2, 100, 50, EQUAL)
    # Same id (and seq) as two stored orders, in the middle of new ones: unordered insert.
    mixed = [*fresh[:20], first[3], *fresh[20:], first[50]]
    with pytest.raises(DuplicateOrderError) as info:
        store.insert_orders(mixed)
    assert info.value.duplicates == 2 and info.value.inserted == 50
    assert store.count_orders() == 150


def test_mark_processed_moves_pending_once(store: Store) -> None:
    orders = generate_chunk(1, 0, 200, EQUAL)
    store.insert_orders(orders)
    vip = _seqs(orders, VIP)
    done = [(seq, 100.0 + i, 100.5 + i) for i, seq in enumerate(vip)]
    assert store.mark_processed(VIP, done, "w1") == len(vip)
    # Run the same batch again (a retried job): nothing moves, nothing is overwritten.
    assert store.mark_processed(VIP, [(s, 999.0, 999.5) for s, _, _ in done], "w2") == 0
    assert store.count_orders(VIP, PROCESSED) == len(vip)
    assert store.count_orders(NORMAL, PROCESSED) == 0
    doc = store.get_orders([vip[1]])[0]
    assert doc["status"] == PROCESSED and doc["worker"] == "w1"
    assert doc["startedAt"] == pytest.approx(101.0, abs=0.001)
    assert doc["processedAt"] == pytest.approx(101.5, abs=0.001)
    assert "VIP" in doc["observacoes"]
    assert doc["attempts"] == 1


def test_a_retried_batch_moves_only_what_is_left_and_records_its_attempt(store: Store) -> None:
    orders = generate_chunk(1, 0, 100, EQUAL)
    store.insert_orders(orders)
    seqs = [o.seq for o in orders if o.priority == NORMAL]
    # The first try committed part of the batch, then its worker died; the retry does it all.
    assert store.get_orders(seqs[:1])[0]["job"] is None
    assert store.mark_processed(NORMAL, [(s, 1.0, 2.0) for s in seqs[:10]], "w1", attempt=1,
                                job="job-a") == 10
    assert store.mark_processed(NORMAL, [(s, 3.0, 4.0) for s in seqs], "w2", attempt=2,
                                job="job-a") == len(seqs) - 10
    docs = store.get_orders(seqs)
    assert [d["attempts"] for d in docs] == [1] * 10 + [2] * (len(seqs) - 10)
    assert {d["worker"] for d in docs[:10]} == {"w1"} and {d["worker"] for d in docs[10:]} == {"w2"}
    # Each order keeps the job that moved it: another job (a batch enqueued again) moves none.
    assert store.mark_processed(NORMAL, [(s, 5.0, 6.0) for s in seqs], "w3", job="job-b") == 0
    assert {d["job"] for d in store.get_orders(seqs)} == {"job-a"}


def test_tally_counts_by_priority_and_status_and_truncate_drops_a_tail(store: Store) -> None:
    assert store.tally().max_seq == -1 and store.tally().count() == 0
    orders = generate_chunk(6, 0, 250, EQUAL)
    store.insert_orders(orders)
    vip = _seqs(orders, VIP)
    store.mark_processed(VIP, [(s, 1.0, 2.0) for s in vip[:5]], "w")
    tally = store.tally()
    assert tally.max_seq == 249 and tally.count() == 250
    assert tally.count(VIP, PROCESSED) == 5 and tally.count(VIP) == len(vip)
    assert tally.count(NORMAL, PENDING) == 250 - len(vip) and tally.count(status=PROCESSED) == 5
    assert store.truncate_from(200) == 50
    assert store.tally().max_seq == 199 and store.count_orders() == 200


def test_ping_answers_when_the_store_is_usable(store: Store) -> None:
    store.verify()
    store.ping()  # raises StoreError otherwise; the unusable cases are in test_faults.py


def test_pending_seqs_pages_in_order_and_skips_processed(store: Store) -> None:
    orders = generate_chunk(4, 0, 400, EQUAL)
    store.insert_orders(orders)
    normal = _seqs(orders, NORMAL)
    store.mark_processed(NORMAL, [(s, 1.0, 2.0) for s in normal[:10]], "w")
    pages, after = [], -1
    while page := store.pending_seqs(NORMAL, after, 37):
        assert len(page) <= 37
        pages.append(page)
        after = page[-1]
    assert [s for page in pages for s in page] == normal[10:]
    assert store.pending_seqs(VIP, -1, 1_000) == _seqs(orders, VIP)


def test_delete_pending_keeps_processed_orders(store: Store) -> None:
    orders = generate_chunk(5, 0, 200, EQUAL)
    store.insert_orders(orders)
    vip = _seqs(orders, VIP)
    store.mark_processed(VIP, [(s, 1.0, 2.0) for s in vip], "w")
    assert store.delete_pending() == 200 - len(vip)
    assert store.count_orders() == len(vip) == store.count_orders(VIP, PROCESSED)
    assert store.get_orders([vip[0]])[0]["processedAt"] == pytest.approx(2.0, abs=0.001)
    assert store.delete_pending() == 0


def test_windows_and_barrier_proof(store: Store) -> None:
    orders = generate_chunk(9, 0, 100, EQUAL)
    store.insert_orders(orders)
    vip, normal = _seqs(orders, VIP), _seqs(orders, NORMAL)
    store.mark_processed(VIP, [(s, 10.0, 11.0) for s in vip[:-1]] + [(vip[-1], 12.0, 20.0)], "w")
    store.mark_processed(NORMAL, [(s, 21.0, 22.0) for s in normal], "w")
    windows = store.windows()
    assert windows[VIP].count == len(vip) and windows[NORMAL].count == len(normal)
    assert windows[VIP].first_started == pytest.approx(10.0)
    assert windows[VIP].last_processed == pytest.approx(20.0)
    assert windows[NORMAL].first_started == pytest.approx(21.0)
    proof = BarrierProof.of(windows)
    assert proof.held is True and proof.gap_ms == pytest.approx(1000.0)


def test_barrier_proof_catches_a_normal_order_that_started_too_early(store: Store) -> None:
    orders = generate_chunk(9, 0, 100, EQUAL)
    store.insert_orders(orders)
    vip, normal = _seqs(orders, VIP), _seqs(orders, NORMAL)
    store.mark_processed(VIP, [(s, 10.0, 20.0) for s in vip], "w")
    # One NORMAL order started at 19.5, before the last VIP order was done at 20.0.
    store.mark_processed(NORMAL, [(normal[0], 19.5, 25.0)] + [(s, 21.0, 22.0) for s in normal[1:]],
                         "w")
    proof = BarrierProof.of(store.windows())
    assert proof.held is False
    assert proof.gap_ms == pytest.approx(-500.0)


def _record(run_id: str, day: str, phase: str, **extra: object) -> RunRecord:
    return RunRecord(run_id=run_id, phase=phase, started_at=f"2026-01-{day}T00:00:00.000+00:00",
                     extra=dict(extra))


def test_clear_orders_keeps_run_history(store: Store) -> None:
    store.insert_orders(generate_chunk(1, 0, 50, EQUAL))
    store.save_run(_record("r1", "01", "DONE"))
    store.clear_orders()
    assert store.count_orders() == 0
    assert store.get_run("r1") == _record("r1", "01", "DONE")
    store.insert_orders(generate_chunk(1, 0, 50, EQUAL))  # indexes still there after clear
    with pytest.raises(DuplicateOrderError):
        store.insert_orders(generate_chunk(1, 0, 1, EQUAL))


def test_runs_upsert_and_list_newest_first(store: Store) -> None:
    for run_id, day in (("a", "01"), ("c", "03"), ("b", "02")):
        store.save_run(_record(run_id, day, "GENERATING", nested={"x": [1, 2]}))
    store.save_run(_record("a", "01", "DONE", nested={"x": [3]}))
    assert [r.run_id for r in store.list_runs()] == ["c", "b", "a"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["c", "b"]
    stored = store.get_run("a")
    assert stored == _record("a", "01", "DONE", nested={"x": [3]})  # unknown keys kept
    assert stored is not None and stored.to_json()["nested"] == {"x": [3]}
    assert store.get_run("zzz") is None
    store.clear_runs()
    assert store.list_runs() == []


def test_a_claim_fences_out_every_earlier_writer(store: Store, other_handle: Store) -> None:
    """A process paused past its lock wakes up holding a handle bound to its old fence:
    every write it tries after another run claimed the store fails and changes nothing."""
    assert store.fence() == Fence("contract", 0)
    store.insert_orders(generate_chunk(1, 0, 100, EQUAL))
    # Another run claims the store through its own handle and starts over.
    assert other_handle.claim("next-run") == Fence("next-run", 0)
    other_handle.clear_orders()
    other_handle.insert_orders(generate_chunk(2, 0, 50, EQUAL))
    other_handle.save_run(_record("next-run", "02", "GENERATING"))
    before = other_handle.get_orders(range(50))
    vip = [d["seq"] for d in before if d["priority"] == VIP]
    stale_writes = [
        lambda: store.insert_orders(generate_chunk(1, 100, 20, EQUAL)),
        lambda: store.mark_processed(VIP, [(s, 1.0, 2.0) for s in vip], "stale"),
        lambda: store.truncate_from(10),
        lambda: store.delete_pending(),
        lambda: store.clear_orders(),
        lambda: store.save_run(_record("contract", "01", "GENERATING")),
    ]
    for write in stale_writes:
        with pytest.raises(StaleRun):
            write()
    assert other_handle.get_orders(range(200)) == before  # nothing changed, nothing added
    assert store.get_run("contract") is None
    # A worker of the new run binds its job's fence and writes.
    store.bind(Fence("next-run", 0))
    assert store.mark_processed(VIP, [(s, 1.0, 2.0) for s in vip], "w") == len(vip)


def test_claiming_again_for_the_same_run_starts_a_new_epoch(store: Store) -> None:
    assert store.claim("contract") == Fence("contract", 1)  # a resume
    assert store.claim("other") == Fence("other", 0)
    assert store.claim("contract") == Fence("contract", 0)


def test_close_run_never_overwrites_a_final_record(store: Store) -> None:
    assert store.close_run(_record("x", "01", "ABORTED"))  # none stored: saved
    assert not store.close_run(_record("x", "01", "ERROR"))  # final one stored: kept
    assert store.get_run("x") == _record("x", "01", "ABORTED")
    store.save_run(_record("y", "01", "GENERATING"))
    assert store.close_run(_record("y", "01", "ABORTED"))  # an open one is closed
    assert store.get_run("y") == _record("y", "01", "ABORTED")


def _nearest_rank(values: list[float], percent: int) -> float:
    """Independent of the stores: the value at rank ceil(p/100 * n) of the sorted values."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


def test_processed_per_bin_counts_each_priority_in_its_100ms_bins(store: Store) -> None:
    since = 1_700_000_000.0
    orders = generate_chunk(3, 0, 200, EQUAL, created_at=since)
    store.insert_orders(orders)
    vip, normal = _seqs(orders, VIP), _seqs(orders, NORMAL)
    store.mark_processed(VIP, [(s, since, since + 0.05) for s in vip[:10]]
                         + [(s, since + 0.2, since + 0.25) for s in vip[10:]], "w")
    store.mark_processed(NORMAL, [(s, since + 0.3, since + 0.35) for s in normal[:-7]], "w")
    bins = store.processed_per_bin(since, 100)
    assert bins == {VIP: {0: 10, 2: len(vip) - 10}, NORMAL: {3: len(normal) - 7}}  # 7 pending
    assert store.processed_per_bin(since, 1_000) == {VIP: {0: len(vip)}, NORMAL: {0: len(normal) - 7}}


def test_latency_percentiles_are_computed_in_the_store_by_nearest_rank(store: Store) -> None:
    created = 1_700_000_000.0
    orders = generate_chunk(4, 0, 300, EQUAL, created_at=created)
    store.insert_orders(orders)
    vip, normal = _seqs(orders, VIP), _seqs(orders, NORMAL)
    # VIP order k waits 10*(k+1) ms and is served in 2*(k+1) ms; NORMAL orders wait 1 s + k ms
    # (in reverse order, so the store must sort) and are all served in 5 ms.
    vip_done = [(s, created + 0.010 * (k + 1), created + 0.012 * (k + 1)) for k, s in enumerate(vip)]
    normal_done = [(s, created + 1 + 0.001 * (len(normal) - k), created + 1.005 + 0.001 * (len(normal) - k))
                   for k, s in enumerate(normal[:-3])]
    store.mark_processed(VIP, vip_done, "w")
    store.mark_processed(NORMAL, normal_done, "w")
    wait, service = store.latency("wait"), store.latency("service")
    assert set(wait) == set(service) == {VIP, NORMAL}
    expected = {
        (VIP, "wait"): [10.0 * (k + 1) for k in range(len(vip))],
        (VIP, "service"): [2.0 * (k + 1) for k in range(len(vip))],
        (NORMAL, "wait"): [1000.0 + (len(normal) - k) for k in range(len(normal) - 3)],
        (NORMAL, "service"): [5.0] * (len(normal) - 3),
    }
    for (priority, kind), values in expected.items():
        spread = (wait if kind == "wait" else service)[priority]
        assert spread.count == len(values), (priority, kind)
        for p in (50, 95, 99):  # ms precision: MongoDB keeps dates in milliseconds
            assert spread.percentiles[p] * 1000 == pytest.approx(_nearest_rank(values, p), abs=1.5)
        assert spread.max * 1000 == pytest.approx(max(values), abs=1.5)
        assert spread.mean * 1000 == pytest.approx(sum(values) / len(values), abs=1.5)


def test_latency_is_computed_apart_on_a_handle_opened_in_its_thread_under_the_runs_fence(
    store: Store, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    """The end of a run computes the latency on a second handle in a thread of its own
    (harness.inside.latency_apart): every backend's handle must work there, and a store that is
    no longer the run's (another fence) gives no latency rather than another run's."""
    opener = contract_store_opener(request, tmp_path)
    created = 1_700_000_000.0
    orders = generate_chunk(4, 0, 200, EQUAL, created_at=created)
    store.insert_orders(orders)
    store.mark_processed(VIP, [(s, created + 0.010, created + 0.012) for s in _seqs(orders, VIP)], "w")
    with ThreadPoolExecutor(1) as pool:
        mine = latency_apart(pool, opener,
                             store.fence() or Fence("none", 0)).result()
        theirs = latency_apart(pool, opener,
                               Fence("another-run", 0)).result()
    assert mine is not None and mine.vip.wait.count == len(_seqs(orders, VIP))
    assert mine.vip.wait.p50_ms == pytest.approx(10.0, abs=1.5)
    assert mine.normal.wait.count in (0, None)
    assert theirs is None
