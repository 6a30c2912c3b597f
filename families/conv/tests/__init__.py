"""Tests of the conv family."""
