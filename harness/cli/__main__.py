"""`python -m harness.cli`, as the tests and `harness bench` start it."""

from harness.cli import main

main()
