"""Tests of fwxtwisted."""
