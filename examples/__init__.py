"""Worked examples, each run by a test (tests/test_examples.py)."""
