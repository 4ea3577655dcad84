"""Shared pytest configuration. The e2e harness lives in tests/cluster.py."""

from __future__ import annotations
