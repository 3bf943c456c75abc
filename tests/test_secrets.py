"""No password from a connection string leaves the process: not in the run record, the
status document, the run table, nor anything the CLI prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from harness.cli import main
from harness.config import redact


def test_passwords_never_appear_in_records_status_or_output(
    tmp_path: Path, mongo_standin: str, redis_factory: Callable[..., str]
) -> None:
    redis_url = redis_factory(tmp_path, password="r3dis-Secret")
    env = {
        "REDIS_URL": redis_url, "MONGO_URI": mongo_standin,
        "HARNESS_DATA_DIR": str(tmp_path / "data"), "HARNESS_QUANTITY": "600",
        "GENERATION_CHUNK_SIZE": "200", "HARNESS_ORDERS_PER_JOB": "100",
        "BACKEND_LOGS": "true", "LOG_PROGRESS_EVERY_MS": "1", "LOG_MEMORY": "true",
    }
    runner = CliRunner()
    outputs = [
        runner.invoke(main, ["run", "--json", "--no-progress"], env=env,
                      catch_exceptions=False).output,
        runner.invoke(main, ["status", "--json"], env=env).output,
        runner.invoke(main, ["status"], env=env).output,
        runner.invoke(main, ["runs", "--json"], env=env).output,
        runner.invoke(main, ["runs", "--csv"], env=env).output,
        runner.invoke(main, ["health"], env=env).output,
        runner.invoke(main, ["health", "--json"], env=env).output,
        runner.invoke(main, ["cancel"], env=env).output,
        runner.invoke(main, ["queue", "status"], env=env).output,
        runner.invoke(main, ["logs", "-n", "1000"], env=env).output,
        (tmp_path / "data" / "harness.log").read_text(),
    ]
    record = json.loads(outputs[0])
    assert record["phase"] == "DONE", record["error"]
    # The record does name where it ran, with the password masked.
    assert record["environment"]["redis"]["url"].startswith("redis://:***@127.0.0.1:")
    assert record["environment"]["store"]["location"] == redact(mongo_standin)
    assert record["parameters"]["mongo_uri"] == redact(mongo_standin)
    log = outputs[-1]  # the log file names the servers (redacted), phases, progress, memory
    assert "redis=redis://:***@127.0.0.1:" in log and "mongo=" in log
    assert "phase=WAITING_NORMAL_DRAIN" in log and "finished run=" in log and "phase=DONE" in log
    assert "progress run=" in log and "rssMb=" in log
    assert outputs[-2].splitlines() == log.splitlines()[-1000:]
    for text in outputs:
        assert text.strip()
        assert "r3dis-Secret" not in text and "s3cret-pw" not in text


def test_log_lines_and_tracebacks_are_redacted() -> None:
    import logging

    from harness.logs import RedactingFormatter

    try:
        raise ConnectionError("cannot reach mongodb://admin:hunter2@db:27017/x")
    except ConnectionError:
        record = logging.LogRecord("harness", logging.ERROR, __file__, 1,
                                   "run failed at %s", ("redis://:pw9@h:1/0",), sys.exc_info())
    text = RedactingFormatter("%(message)s").format(record)
    assert "Traceback" in text and "mongodb://admin:***@db" in text
    assert "hunter2" not in text and "pw9" not in text
