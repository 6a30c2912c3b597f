"""Tests of the index_copy family."""
