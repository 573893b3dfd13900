"""Shared test setup: Triton runs in its CPU interpreter; all tests are CPU, fp32 unless stated."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
