"""Tests of the experts family."""
