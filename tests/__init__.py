"""The test suite, a package mirroring harness/: pytest puts the repository root on sys.path (rootdir-based
`prepend` import mode finds the first folder above without an __init__.py), so `tests.support` and `harness`
import the same way in every test module and in every worker a test starts with `python -m tests.support...`."""
