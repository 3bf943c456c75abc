"""Test support, loaded at start-up by Python processes the tests start with this folder on
PYTHONPATH (notebook kernels of a sweep, `harness` subprocesses): when
HARNESS_TEST_LITEMONGO_DIR is set, pymongo's client is litemongo's over that folder, the
stand-in `tests/conftest.py` uses in-process (no MongoDB server can run on these machines).
Never on PYTHONPATH outside the tests."""

import os

_folder = os.environ.get("HARNESS_TEST_LITEMONGO_DIR")
if _folder:
    import litemongo
    import pymongo

    def _standin(uri: str, **kwargs: object) -> object:
        return litemongo.connect(_folder)

    pymongo.MongoClient = _standin  # type: ignore[assignment,misc]
