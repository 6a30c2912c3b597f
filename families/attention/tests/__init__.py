"""Tests of the attention family."""
