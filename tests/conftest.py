"""Shared test helpers: run the CLI in-process, paths to the real sample data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumice.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def cli(capsys):
    """Run ``pumice ARGS`` in this process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def shared_data():
    """``shared_data(name)``: a file of ../shared/data, or skip the test when it is absent."""

    def find(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.exists():
            pytest.skip(f"{path} is absent (real sample data lives in ../shared/data)")
        return path

    return find
