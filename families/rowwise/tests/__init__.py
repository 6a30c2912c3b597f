"""Tests of the rowwise family."""
