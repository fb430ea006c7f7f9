"""Fixtures of the ingest tests: run the CLI in this process."""

from __future__ import annotations

import pytest

from pumice.cli.main import main


@pytest.fixture
def pumice(capsys):
    """``pumice(*argv)`` runs the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def ingest_ok(pumice):
    """``ingest_ok(source, dest, *options)``: run ``pumice ingest`` and require success."""

    def run(source, dest, *options) -> str:
        code, out, err = pumice("ingest", source, dest, *options)
        assert code == 0, f"ingest failed ({code}): {err}"
        return err

    return run
