"""No password from a connection string leaves the process: not in the run record, the
status document, the run table, nor anything the CLI prints."""

from __future__ import annotations

import json
import re
import string
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

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
        runner.invoke(main, ["logs", "-n", "1000"], env=env).output,  # kept in Redis
        runner.invoke(main, ["logs", "--file", "-n", "1000"], env=env).output,
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
    assert "redis=redis://:***@127.0.0.1:" in outputs[-3] and "finished run=" in outputs[-3]
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


@pytest.mark.parametrize(("text", "shown"), [
    ("redis://:Sl4sh/PW77@127.0.0.1:6421/0", "redis://:***@127.0.0.1:6421/0"),
    ("error: redis://:Sp ace77@127.0.0.1:6421/0 (timeout)", "error: redis://:***@127.0.0.1:6421/0 (timeout)"),
    ("redis://:At@PW77@127.0.0.1:6421/0", "redis://:***@127.0.0.1:6421/0"),
    ("mongodb://user:pw@[::1/", "mongodb://user:***@[::1/"),
    ("redis=redis://:p1@h1:1/0 mongo=mongodb://u:p2@h2/x?w=1&password=p3",
     "redis=redis://:***@h1:1/0 mongo=mongodb://u:***@h2/x?w=1&password=***"),
    ("a line\nredis://:pw99@h:1/0\nmail me@example.com", "a line\nredis://:***@h:1/0\nmail me@example.com"),
    ("mongodb://reader@h/x and redis://h:6379/0", "mongodb://reader@h/x and redis://h:6379/0"),
])
def test_redact_reads_the_userinfo_up_to_the_last_at_sign(text: str, shown: str) -> None:
    """Passwords with '/', a space or '@' were printed whole or in half by the old regex."""
    assert redact(text) == shown


# Everything a careless password holds: letters, digits, ASCII punctuation (/ @ : ? # %), a
# space, and any other printable character of any script. Not newlines: a URL is one line.
PASSWORD_CHARS = st.one_of(
    st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " "),
    st.characters(blacklist_categories=("Cs", "Cc")),
)
HOSTS = ["127.0.0.1:6421", "cache.example.net", "[::1]:6379", "db-1:27017,db-2:27017", "h"]
AROUND = st.text(  # text around the URL: anything but '@' and other URLs (harness.redaction)
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="@"),
    max_size=30,
).filter(lambda t: "://" not in t)


@settings(max_examples=400, deadline=None)
@given(
    scheme=st.sampled_from(["redis", "rediss", "mongodb", "mongodb+srv"]),
    user=st.sampled_from(["", "admin", "harness_user", "u.ser-1"]),
    password=st.text(PASSWORD_CHARS, min_size=4, max_size=24),
    host=st.sampled_from(HOSTS),
    path=st.sampled_from(["", "/0", "/orders?authSource=admin", "/?tls=true"]),
    before=AROUND, after=AROUND,
)
@example(scheme="redis", user="", password="At@PW77", host="127.0.0.1:6421", path="/0",
         before="", after="")
@example(scheme="redis", user="", password="Sp ace77", host="127.0.0.1:6421", path="/0",
         before="error ", after=" (timeout)")
def test_redact_hides_any_password_in_any_url_and_keeps_the_host(
    scheme: str, user: str, password: str, host: str, path: str, before: str, after: str
) -> None:
    url = f"{scheme}://{user}:{password}@{host}{path}"
    text = f"{before} {url} {after}"
    assume(text.count(password) == 1)  # a password also found elsewhere cannot be told apart
    assume(not re.search(r"\s\S*://", password))  # whitespace then x://: a URL of its own
    out = redact(text)
    assert password not in out
    assert f"{scheme}://{user}:***@{host}{path}" in out
    assert out == f"{before} {scheme}://{user}:***@{host}{path} {after}"
