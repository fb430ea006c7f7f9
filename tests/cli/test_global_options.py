"""--debug and --s3-endpoint are accepted before or after any verb and sub-verb."""

import argparse

import numpy as np
import pytest

from pumice.cli.main import build_parser


def _verb_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(verb path, its parser) for every verb and nested sub-verb of the command line."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _verb_paths(sub, (*path, name))


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a parser's required arguments: positionals, and options marked required
    (e.g. remap's --mapping)."""
    values = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            if action.required:
                values += [action.option_strings[-1], str(next(iter(action.choices))) if action.choices else "x"]
            continue
        count = {None: 1, "+": 1, "?": 0, "*": 0}.get(action.nargs, action.nargs)
        values += [str(next(iter(action.choices))) if action.choices else "x"] * count
    return values


VERB_PATHS = [path for path, _ in _verb_paths(build_parser())]


def test_the_walk_finds_verbs_and_sub_verbs():
    assert {("info",), ("ingest",), ("queue",), ("skeleton",), ("contrast", "levels"), ("contrast", "clahe")} <= set(VERB_PATHS)


@pytest.mark.parametrize("path", VERB_PATHS, ids=" ".join)
def test_global_options_after_any_verb(path):
    parser = build_parser()
    sub = dict(_verb_paths(parser))[path]
    args = parser.parse_args([*path, *_positionals(sub), "--debug", "--s3-endpoint", "http://127.0.0.1:9"])
    assert args.debug is True and args.s3_endpoint == "http://127.0.0.1:9"


@pytest.mark.parametrize("path", VERB_PATHS, ids=" ".join)
def test_global_options_before_a_verb_are_not_reset_by_it(path):
    parser = build_parser()
    sub = dict(_verb_paths(parser))[path]
    args = parser.parse_args(["--debug", "--s3-endpoint", "http://127.0.0.1:9", *path, *_positionals(sub)])
    assert args.debug is True and args.s3_endpoint == "http://127.0.0.1:9"
    args = parser.parse_args([*path, *_positionals(sub)])
    assert args.debug is False and args.s3_endpoint is None


def test_debug_after_the_verb_shows_the_traceback_then_the_one_line_error(tmp_path, cli):
    code, _, err = cli("info", tmp_path / "missing", "--debug")
    assert code == 2
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].startswith("pumice: error: no Precomputed layer at")

    np.save(tmp_path / "a.npy", np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6))
    assert cli("ingest", tmp_path / "a.npy", tmp_path / "l", "--resolution", "4,4,40")[0] == 0
    code, out, err = cli("info", tmp_path / "l", "--debug")
    assert code == 0 and "image uint8" in out and err == ""


def test_summary_folds_a_numbered_run_of_stages_into_one_entry():
    """ccl plans label-exchange rounds for the worst case; 52 "roundN 0.0 s" entries buried the rest."""
    from pumice.cli.common import stage_times
    from pumice.execution.local import StageReport

    names = ["label", "seam", *(f"round{n}" for n in range(1, 53)), "heads", "mip1", "mip2", "z9"]
    stages = [StageReport(name, 1, seconds=0.5 if name == "round1" else 0.25) for name in names]
    assert stage_times(stages) == [("label", 0.25), ("seam", 0.25), ("round1-52", 0.5 + 51 * 0.25), ("heads", 0.25),
                                   ("mip1", 0.25), ("mip2", 0.25), ("z9", 0.25)]
