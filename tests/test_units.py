"""Pure logic, no services: the run record and its versions, settings across a process
boundary, the status document, retry due times, the sweep grid."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from harness.config import ENV_VARS, INT_RANGES, SWEEPABLE, Settings, parse_grid
from harness.errors import ConfigError
from harness.orders import NORMAL, VIP
from harness.record import (
    SCHEMA_VERSION,
    BarrierProof,
    CancelInfo,
    Measured,
    Memory,
    RunRecord,
    failed_point,
    finish,
)
from harness.state import Phase
from harness.status import snapshot
from harness.store import Tally, Window

RECORDS_V1 = Path(__file__).parent / "data" / "records-v1.json"


def _v1() -> list[dict[str, Any]]:
    """Records as the harness wrote them before they were typed (version 1): a DONE run, a
    resumed one, ABORTED by SIGTERM, by cancel, by a takeover, and a failed sweep point."""
    return json.loads(RECORDS_V1.read_text())


def _subset(old: Any, new: Any, path: str = "") -> None:
    """Every key and value of ``old`` is in ``new``, unchanged."""
    if isinstance(old, dict):
        for key, value in old.items():
            assert key in new, f"{path}{key} lost"
            _subset(value, new[key], f"{path}{key}.")
    else:
        assert old == new, f"{path} changed: {old!r} -> {new!r}"


@pytest.mark.parametrize("raw", _v1(), ids=lambda r: f"{r['phase']}-{r['runId']}")
def test_a_version_1_record_reads_and_writes_back_without_losing_anything(raw: dict[str, Any]) -> None:
    record = RunRecord.from_json(raw)
    assert record.schema_version == 1 and record.run_id == raw["runId"] and record.phase == raw["phase"]
    written = record.to_json()
    _subset(raw, written)
    assert written["schemaVersion"] == SCHEMA_VERSION
    assert RunRecord.from_json(written).to_json() == written  # and round trips from there


def test_version_1_records_have_the_parts_typed() -> None:
    by_phase = {(r.phase, bool(r.resumes), r.error): r for r in map(RunRecord.from_json, _v1())}
    resumed = next(r for (phase, was_resumed, _), r in by_phase.items() if was_resumed)
    assert resumed.resumes[0].from_phase and resumed.resumes[0].epoch == 1
    cancelled = next(r for r in by_phase.values() if r.cancel and r.cancel.by_coordinator is None
                     and r.cancel.phase == "GENERATING")
    assert cancelled.cancel is not None and cancelled.cancel.removed_pending == 0
    done = next(r for r in by_phase.values() if r.is_done)
    assert done.barrier is not None and done.barrier.held
    assert done.processing is not None and done.processing.vip.count > 0
    assert done.environment is not None and done.environment.packages["rq"]
    assert done.row()["overallPerSec"] == done.throughput.overall if done.throughput else False


def test_a_newer_records_unknown_keys_are_kept() -> None:
    raw = {"runId": "x", "phase": "DONE", "schemaVersion": SCHEMA_VERSION + 1,
           "gpuLoad": {"p99Ms": 3.5}, "counts": {"generated": 5, "future": 1},
           "environment": {"python": "3.14", "gpu": "none"}}
    written = RunRecord.from_json(raw).to_json()
    assert written["gpuLoad"] == {"p99Ms": 3.5} and written["environment"]["gpu"] == "none"
    assert written["schemaVersion"] == SCHEMA_VERSION + 1


def _windows(vip_end: float, normal_start: float) -> dict[str, Window]:
    return {VIP: Window(3, 1.0, 2.0, 1.5, vip_end), NORMAL: Window(2, normal_start, normal_start,
                                                                   normal_start + 1, normal_start + 1)}


def test_finish_refuses_done_when_the_store_disagrees_or_the_barrier_failed() -> None:
    good = RunRecord(run_id="a", counts=dataclasses.replace(RunRecord(run_id="a").counts, vip=3, normal=2))
    finish(good, Phase.DONE, None, Measured(windows=_windows(5.0, 5.5), total_s=2.0))
    assert good.phase == "DONE" and good.counts.processed == 5 and good.throughput is not None
    assert good.throughput.overall == 2.5 and good.barrier == BarrierProof.of(_windows(5.0, 5.5))
    short = RunRecord(run_id="b")
    short.counts.vip, short.counts.normal = 4, 2
    finish(short, Phase.DONE, None, Measured(windows=_windows(5.0, 5.5)))
    assert short.phase == "ERROR" and short.error == "store holds 3/4 VIP and 2/2 NORMAL orders processed"
    early = RunRecord(run_id="c")
    early.counts.vip, early.counts.normal = 3, 2
    finish(early, Phase.DONE, None, Measured(windows=_windows(5.0, 4.5)))
    assert early.phase == "ERROR" and early.error == "VIP-first barrier violated: gap -500.0 ms"
    blind = RunRecord(run_id="d")
    finish(blind, Phase.DONE, None, Measured(windows=None))
    assert blind.phase == "ERROR"


def test_the_overall_rate_is_the_one_the_live_status_gives_for_the_stored_total() -> None:
    """The last progress line (the live status) and the summary once printed 23,057 and
    23,056 orders/s for one run: one divided by the stored total (rounded to the microsecond),
    the other by the unrounded one. Both now come from the stored total. (5 orders in
    0.086730269 s: 57.6/s unrounded, 57.7/s over the stored 86.730 ms.)"""
    record = RunRecord(run_id="a", counts=dataclasses.replace(RunRecord(run_id="a").counts, vip=3, normal=2))
    finish(record, Phase.DONE, None, Measured(windows=_windows(5.0, 5.5), total_s=0.086730269))
    assert record.total_time_ms == 86.73 and record.throughput is not None
    live = snapshot({"phase": "DONE", "target": "5", "generated": "5", "runId": "a",
                     "processed:VIP": "3", "processed:NORMAL": "2",
                     "totalTimeMs": str(record.total_time_ms)}, now=0.0)
    assert record.throughput.overall == live["throughput"]["overall"] == 57.7


def test_a_run_that_stopped_early_counts_what_the_store_holds() -> None:
    """A cancel during GENERATING once recorded the VIP orders *enqueued* so far, so that
    vip + normal != generated; the counts now come from the store's tally."""
    record = RunRecord(run_id="a", phase=Phase.GENERATING.value)
    record.counts.vip, record.counts.normal = 34_000, 100  # what the coordinator knew
    tally = Tally({(VIP, "processado"): 3, (VIP, "pendente"): 34_914, (NORMAL, "pendente"): 105_083},
                  max_seq=139_999)
    finish(record, Phase.ABORTED, "cancelled", Measured(windows={}, tally=tally),
           cancel=CancelInfo(run_id="a", phase="GENERATING"))
    assert record.counts.vip == 34_917 and record.counts.normal == 105_083
    assert record.counts.generated == 140_000 == record.counts.vip + record.counts.normal
    assert record.stopped_in_phase == "GENERATING" and record.cancel is not None


def test_a_failed_point_is_a_closed_error_record() -> None:
    record = failed_point("sw-p1", {"quantity": 10}, "boom")
    assert record.phase == "ERROR" and record.error == "boom" and record.finished_at
    assert record.row()["quantity"] == 10 and RunRecord.from_json(record.to_json()) == record


# -- settings across a process boundary ----------------------------------------------------

def test_every_setting_has_an_environment_variable() -> None:
    assert {f.name for f in dataclasses.fields(Settings)} == set(ENV_VARS)


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
               min_size=1, max_size=30)
FLOATS = {"work_ms": (0, 60_000), "stuck_after_s": (0.001, 86_400),
          "cancel_timeout_s": (0.001, 86_400), "store_timeout_s": (0.001, 60),
          "retry_backoff_s": (0, 3_600)}


@st.composite
def any_settings(draw: st.DrawFn) -> Settings:
    values: dict[str, Any] = {}
    for name, (low, high) in INT_RANGES.items():
        values[name] = draw(st.integers(low, min(high, 2**40)))
    values["max_orders"] = max(values["max_orders"], values["quantity"])
    for name, (low, high) in FLOATS.items():
        values[name] = draw(st.floats(low, high, allow_nan=False))
    values["seed"] = draw(st.none() | st.integers(0, 2**63 - 1))
    values["mongo_uri"] = draw(st.none() | text.map(lambda t: f"mongodb://u:{t}@h/db"))
    values["redis_url"] = draw(st.none() | st.just("redis://:p%40ss@127.0.0.1:6380/2"))
    values["mongo_db"] = draw(text)
    values["redis_host"] = draw(st.sampled_from(["127.0.0.1", "redis", "::1"]))
    values["tier_mix"] = draw(st.sampled_from(["BRONZE=1,PRATA=1,OURO=1,DIAMANTE=1",
                                               "DIAMANTE=0.25,BRONZE=3.5"]))
    values["log_memory"] = draw(st.booleans())
    values["backend_logs"] = draw(st.booleans())
    values["warmup"] = draw(st.booleans())
    values["data_dir"] = Path(draw(st.sampled_from(["data", "/tmp/x y", "rel/é"])))
    values["log_file"] = draw(st.none() | st.just(Path("/tmp/h.log")))
    values["sweep_id"] = draw(st.none() | st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True))
    values["reports_dir"] = Path("reports")
    values["notebooks_dir"] = draw(st.none() | st.just(Path("/nb")))
    return Settings(**values)


@hypothesis_settings(max_examples=200, deadline=None)
@given(any_settings())
def test_settings_survive_the_environment_round_trip(s: Settings) -> None:
    assert Settings.from_env(environ=s.to_env()) == s


def test_a_grid_names_any_sweepable_setting_and_converts_its_values() -> None:
    grid = parse_grid(["normal_batch_size=5000,20000", "work_ms=0,0.5",
                       "tier_mix=BRONZE=3,DIAMANTE=1", "tier_mix=DIAMANTE=1"])
    assert grid == {"normal_batch_size": [5000, 20000], "work_ms": [0.0, 0.5],
                    "tier_mix": ["BRONZE=3,DIAMANTE=1", "DIAMANTE=1"]}
    assert set(SWEEPABLE) >= {"quantity", "chunk_size", "orders_per_job", "concurrency",
                              "normal_batch_size", "work_ms", "tier_mix"}
    with pytest.raises(ConfigError, match="expected NAME=VALUES"):
        parse_grid(["redis_url=x"])
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_grid(["chunk_size=10,ten"])


# -- the status document and retry due times ----------------------------------------------

def test_status_snapshot_of_a_run_half_way() -> None:
    fields = {"phase": "WAITING_NORMAL_DRAIN", "runId": "r", "target": "1000", "generated": "1000",
              "processed:VIP": "250", "processed:NORMAL": "250", "start:VIP": "100.0",
              "end:VIP": "101.0", "start:NORMAL": "101.5", "end:NORMAL": "102.0",
              "startedAt": "99.0", "vipTotal": "250", "normalTotal": "750"}
    doc = snapshot(fields, now=104.0)
    assert doc["isProcessing"] and doc["lastRunId"] == "r"
    assert doc["processing"]["vip"] == {"start": "1970-01-01T00:01:40.000+00:00",
                                        "end": "1970-01-01T00:01:41.000+00:00", "timeMs": 1000.0,
                                        "count": 250}
    assert doc["totalTimeMs"] == 5000.0 and doc["throughput"]["overall"] == 100.0
    assert doc["eta"] == {"estimatedMs": 4000, "progressPercent": 50.0}  # 500 left at 125/s
    assert doc["progress"] == {"target": 1000, "generated": 1000, "processedTotal": 500}
    assert snapshot({}, now=1.0)["phase"] == "IDLE"


def test_a_retry_is_due_its_backoff_after_its_try_ended() -> None:
    from redis import Redis
    from rq.job import Job

    from harness.retries import due_at

    job = Job(id="j", connection=Redis())  # a client; due_at sends nothing
    job.ended_at = datetime(2026, 1, 1, tzinfo=UTC)
    job.retry_intervals = [0.6, 1.2, 2.4]  # type: ignore[list-item]
    # RQ picks interval [len - retries left], then counts the retry down: a job waiting for
    # its first retry has 2 left, for its last 0.
    job.retries_left = 2
    assert due_at(job) == job.ended_at.timestamp() + 0.6
    job.retries_left = 0
    assert due_at(job) == (job.ended_at + timedelta(seconds=2.4)).timestamp()
    job.retry_intervals = []
    assert due_at(job) == 0.0


# -- health ---------------------------------------------------------------------------------

def test_health_classification_takes_the_worst_and_lists_every_reason() -> None:
    from harness.control import HealthFacts, classify

    calm = HealthFacts(phase="DONE", error=None, paused=False, dead_coordinator=None,
                       failed_jobs=0, stuck_for_s=None)
    assert classify(calm) == ("healthy", [])
    assert classify(dataclasses.replace(calm, failed_jobs=2))[0] == "degraded"
    assert classify(dataclasses.replace(calm, phase="WAITING_NORMAL_DRAIN", stuck_for_s=61.0)) == (
        "degraded", ["no progress for 61.0s with work pending"])
    assert classify(dataclasses.replace(calm, phase="ABORTED", error="cancelled"))[0] == "aborted"
    everything = HealthFacts(phase="ERROR", error="boom", paused=True, dead_coordinator="r1",
                             failed_jobs=1, stuck_for_s=None)
    status, reasons = classify(everything)
    assert status == "error" and len(reasons) == 4
    assert classify(dataclasses.replace(everything, phase="GENERATING", dead_coordinator=None))[0] == "paused"
    assert "`harness resume`" in classify(dataclasses.replace(calm, dead_coordinator="r1"))[1][0]


def test_the_memory_line_of_a_run_without_local_workers_names_none() -> None:
    """``-c 0``: the workers joined through Redis, so there is nothing here to sample; the
    summary says so instead of printing 'None MB'."""
    from harness.runs import _memory_line

    joined = Memory(method="psutil", coordinator_peak_rss_mb=58.7, coordinator_growth_mb=6.5,
                    coordinator_cpu_s=5.25, workers=0)
    assert "None" not in _memory_line(joined) and "no local workers" in _memory_line(joined)
    local = dataclasses.replace(joined, workers=2, worker_peak_uss_mb=39.1, workers_cpu_s=6.1)
    assert "2 worker(s) peak 39.1 MB USS" in _memory_line(local)


def test_a_git_check_that_overruns_its_deadline_leaves_no_index_lock(tmp_path: Path) -> None:
    """The run's ``gitDirty`` check refreshes the index through the notebooks' clean filter;
    when it overruns, git is stopped so that it removes its ``index.lock``. (Killed outright,
    it left the lock, and every later git command in the checkout failed.)"""
    import subprocess

    from harness.runs import _run_git

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "filter.slow.clean", "if test -e .slow; then sleep 5; fi; cat")
    (tmp_path / ".gitattributes").write_text("*.txt filter=slow\n")
    (tmp_path / "a.txt").write_text("a\n")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    (tmp_path / ".slow").touch()  # from here the filter takes 5 s
    lock = tmp_path / ".git" / "index.lock"
    for killed_outright in (True, False):
        (tmp_path / "a.txt").write_text("b\n")  # changed: a refresh runs the filter on it
        if killed_outright:  # what subprocess.run(timeout=...) does: the lock stays
            with pytest.raises(subprocess.TimeoutExpired):
                subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=tmp_path,
                               timeout=0.5)
            assert lock.exists(), "git killed outright no longer leaves its lock: drop this half"
            lock.unlink()
        else:
            assert _run_git("update-index", "-q", "--refresh", timeout=0.5, cwd=tmp_path) is None
            assert not lock.exists()
    (tmp_path / ".slow").unlink()
    git("add", "a.txt")  # the checkout's git still works
    import psutil  # the stopped gits' filters, still sleeping: none outlives the test

    for proc in psutil.process_iter():
        try:
            if proc.cwd() == str(tmp_path):
                proc.kill()
        except psutil.Error:
            pass


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_a_jobs_seqs_come_back_as_they_were_packed(seqs: list[int]) -> None:
    """Whatever a batch holds (a run's close-together seqs, or a resumed run's scattered,
    unordered ones), the job carries it back exactly, also through pickle (as RQ stores
    it); only two or more seqs ascending in steps of 1 to 255 are packed."""
    import pickle

    from harness.queue import Seqs, pack

    for batch in (seqs, sorted(set(seqs)), list(range(7, 7 + 3 * len(seqs), 3))):
        packed = pack(batch)
        carried = pickle.loads(pickle.dumps(packed))
        assert list(carried) == batch and len(carried) == len(batch)
        steps = [b - a for a, b in itertools.pairwise(batch)]
        assert isinstance(packed, Seqs) == (len(batch) > 1 and all(1 <= s <= 255 for s in steps))


def test_a_run_sized_batch_packs_to_a_fifth() -> None:
    """5,000 NORMAL seqs of a 1M run (3 in 4 orders): what RQ compresses shrinks ~5x."""
    import pickle
    import random

    from harness.queue import Seqs, pack

    rng = random.Random(1)
    batch = [s for s in range(900_000, 920_000) if rng.random() < 0.75][:5_000]
    packed = pack(batch)
    assert isinstance(packed, Seqs) and packed == pack(list(batch))
    assert len(pickle.dumps(packed)) * 4 < len(pickle.dumps(batch))


def test_generation_pauses_garbage_collection_and_gives_it_back() -> None:
    """Collections are off while orders are made and stored, and back as they were after,
    also when the generation fails; a process that had them off keeps them off."""
    import gc

    from harness.producer import collections_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_paused():
        assert not gc.isenabled()
        raise RuntimeError("the store went away")
    assert gc.isenabled()
    gc.disable()
    try:
        with collections_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
