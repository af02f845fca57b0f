"""Tests of the documentation in docs/ and README.md."""
