"""What every verb shares: the one-line error parser, run options, running a plan, the summary."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ..errors import PumiceError
from ..execution import cluster, local, queued
from ..geometry import Bbox, format_bytes, parse_bytes, parse_vec
from ..ops.pyramid import METHODS
from ..plan import Plan
from ..storage import urls
from ..storage.info import ENCODINGS
from ..storage.kv import open_kv


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the fix, like every other error."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Vectors such as `--translate -20,-30,5` are values, not options.
        self._negative_number_matcher = re.compile(r"^-\d[\d.,-]*$")

        # Every verb (and sub-verb) made from this parser takes the global options too.
        self.register("action", "parsers", _VerbParsers)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise PumiceError(f"{message} (see {self.prog} --help)")


class _VerbParsers(argparse._SubParsersAction):
    """Subparsers that accept the global options after their verb as well as before it."""

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        add_global_options(parser, after_verb=True)
        return parser


def add_global_options(parser: argparse.ArgumentParser, *, after_verb: bool = False) -> None:
    """--debug and --s3-endpoint, the same wherever a user puts them.

    After a verb the defaults are SUPPRESS: argparse copies a verb's namespace over the top-level
    one, so a default there would undo `pumice --debug VERB`.
    """
    g = parser.add_argument_group("global options")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if after_verb else False,
                   help="show tracebacks")
    g.add_argument("--s3-endpoint", metavar="URL", default=argparse.SUPPRESS if after_verb else None,
                   help="endpoint of an S3-compatible store (or set AWS_ENDPOINT_URL)")


def add_actions(p: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Sub-verbs (``pumice contrast levels``, ``pumice queue purge``), built one way: the verb alone
    prints its help and exits 2."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda args: p.print_help() or 2)
    return actions


# -- option groups, declared once: every verb that reads a layer, writes a new one, or runs a plan
# uses these, so an option means the same everywhere -------------------------------------------------
def add_source_options(p: argparse.ArgumentParser, *, what: str = "SRC", bounds: bool = True) -> None:
    """``--mip --bounds --fill-missing``: which part of the layer an operation reads."""
    g = p.add_argument_group("source")
    g.add_argument("--mip", type=int, default=0, help=f"mip of {what} to read (default 0)")
    if bounds:
        g.add_argument("--bounds", metavar="X0,Y0,Z0,X1,Y1,Z1", help="only this region (voxels of --mip)")
    g.add_argument("--fill-missing", action="store_true", help="read missing chunks as zeros instead of failing")


def source_args(args: argparse.Namespace) -> dict[str, Any]:
    out = {"mip": args.mip, "fill_missing": args.fill_missing}
    if hasattr(args, "bounds"):
        out["bounds"] = parse_bounds(args.bounds)
    return out


def add_output_options(p: argparse.ArgumentParser, *, encodings: tuple[str, ...] = ENCODINGS) -> None:
    """``--chunk-size --encoding --sharded --num-mips --factor --method --sparse --force``: how a new
    layer is stored, and the pyramid made in the same pass."""
    g = p.add_argument_group("output layer")
    g.add_argument("--chunk-size", metavar="X,Y,Z", help="chunk shape (default: the source's)")
    g.add_argument("--encoding", choices=encodings,
                   help="chunk encoding (default: the source's, if it can hold the output)")
    g.add_argument("--sharded", action=argparse.BooleanOptionalAction, default=None,
                   help="write sharded scales (or --no-sharded: one file per chunk); default: as the source")
    g.add_argument("--num-mips", type=int, default=0, help="also downsample this many mips in the same pass")
    g.add_argument("--factor", default="auto", metavar="X,Y,Z|auto", help="downsampling factor (see pumice downsample)")
    g.add_argument("--method", choices=METHODS, default="auto", help="downsampling method (see pumice downsample)")
    g.add_argument("--sparse", action="store_true", help="downsampling: a mode that does not let background win")
    g.add_argument("--force", action="store_true", help="allow a downsampling method that rarely makes sense for the type")


def output_args(args: argparse.Namespace) -> dict[str, Any]:
    return dict(chunk_size=vec_arg(args.chunk_size, "--chunk-size", positive=True), encoding=args.encoding,
                sharded=args.sharded, num_mips=args.num_mips,
                factor="auto" if args.factor == "auto" else vec_arg(args.factor, "--factor", positive=True),
                method=args.method, sparse=args.sparse, force=args.force)


def parse_bounds(text: str | None) -> Bbox | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 6:
        raise PumiceError(f"--bounds must be six integers x0,y0,z0,x1,y1,z1, got {text!r}")
    box = Bbox.from_list(values)
    if box.empty():
        flat = ", ".join(f"{a}1 <= {a}0" for a, lo, hi in zip("xyz", box.minpt, box.maxpt) if hi <= lo)
        raise PumiceError(f"--bounds {text} is an empty box ({flat}); give x1,y1,z1 greater than x0,y0,z0")
    return box


def add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("running")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N", help="parallel worker processes (default: all cores)")
    g.add_argument("--cluster", metavar="ADDRESS",
                   help="run on Dask: a scheduler's address (tcp://host:8786) or local:N for N worker processes here")
    g.add_argument("--queue", metavar="URL", help="enqueue instead of running, on fq:///shared/folder or sqs://name; "
                   "`pumice worker URL` processes run it")
    g.add_argument("--memory", default=None, metavar="SIZE",
                   help="memory budget per task, e.g. 256MiB; block shapes follow from it (default: the operation's own)")
    g.add_argument("--dry-run", action="store_true", help="print the plan (tasks, block shape, memory per task, output scales) and stop")
    g.add_argument("--restart", action="store_true", help="forget finished tasks of an earlier run of this command and redo them")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--json", action="store_true", dest="json_summary",
                   help="print the run's summary (or the --dry-run plan) as one JSON object on stdout, for scripts")


def positive_int(text: str) -> int:
    """argparse type: checked while parsing, so nothing is planned or written with a bad value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def vec_arg(text: str | None, name: str, *, kind: type = int, positive: bool = False) -> tuple | None:
    return None if text is None else parse_vec(text, name, kind=kind, positive=positive)


def parse_ids(text: str | None, name: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise PumiceError(f"{name} must be comma-separated whole numbers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise PumiceError(f"{name} must be positive object ids (0 is background), got {text!r}")
    return values


def memory_arg(args: argparse.Namespace) -> dict[str, int]:
    """``memory=`` for a planner, or nothing, so the planner's own default applies."""
    return {} if args.memory is None else {"memory": parse_bytes(args.memory)}


def note(message: str) -> None:
    print(f"pumice: {message}", file=sys.stderr)


def execute(plan: Plan, notes: list[str], args: argparse.Namespace) -> local.RunReport | None:
    """Dry-run or run a plan; print the summary; undo a fresh destination if the input was bad."""
    as_json = getattr(args, "json_summary", False)
    for text in notes:
        note(text)
    if args.dry_run:
        print(json.dumps(plan_record(plan)) if as_json else plan_text(plan))
        return None
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        chosen = [name for name in ("workers", "cluster", "queue") if getattr(args, name, None)]
        if len(chosen) > 1:
            raise PumiceError(f"--{chosen[0]} and --{chosen[1]} choose different runners; pass one of them")
        if getattr(args, "queue", None):
            said = queued.enqueue(plan, args.queue, restart=args.restart)
            print(json.dumps({"operation": plan.operation, "job": plan.job_id, "queue": args.queue, "message": said})
                  if as_json else said)
            return None
        if getattr(args, "cluster", None):
            report = cluster.run(plan, args.cluster, progress=progress, restart=args.restart, say=note)
        else:
            report = local.run(plan, workers=args.workers, progress=progress, restart=args.restart)
    except PumiceError as e:
        if e.exit_code == 2 and plan.fresh_destination:
            discard(plan.destination)
            raise type(e)(f"{e} (nothing was kept at {urls.display(plan.destination)})") from None
        raise
    for text in report.notes:
        note(text)
    print(json.dumps(summary_record(plan, report)) if as_json else summary(plan, report))
    return report


def discard(url: str) -> None:
    """Remove everything a run wrote to a destination that did not exist before it."""
    open_kv(url).delete_prefix("")


def plan_text(plan: Plan) -> str:
    lines = [f"plan: {plan.operation} (job {plan.job_id})"]
    for key, value in plan.description.items():
        if isinstance(value, list):
            lines.append(f"  {key.replace('_', ' ')}:")
            lines += [f"    {item}" for item in value]
        else:
            lines.append(f"  {key.replace('_', ' ')}: {value}")
    lines += [f"  stage {stage.name}: {stage.count} task(s)" for stage in plan.stages]
    return "\n".join(lines)


def plan_record(plan: Plan) -> dict[str, Any]:
    """--dry-run --json: the plan as data."""
    return {"operation": plan.operation, "job": plan.job_id, "destination": urls.display(plan.destination),
            "stages": {s.name: s.count for s in plan.stages}, "tasks": plan.task_count, "description": plan.description,
            "params": plan.params, "recipe": plan.recipe}


def summary_record(plan: Plan, report: local.RunReport) -> dict[str, Any]:
    """--json: the run's summary as data (what ``summary`` says in words), for scripts and benchmarks."""
    return {
        "operation": plan.operation, "job": plan.job_id, "destination": urls.display(plan.destination),
        "seconds": report.seconds, "workers": report.workers, "tasks": sum(s.total for s in report.stages),
        "ran": report.ran, "skipped": report.skipped, "peak_rss_bytes": report.peak_rss_bytes,
        "voxels": report.total("voxels"),
        "stages": {s.name: {"tasks": s.total, "ran": s.ran, "skipped": s.skipped, "seconds": s.seconds, "totals": s.totals}
                   for s in report.stages},
        "outcome": plan.outcome({s.name: s.totals for s in report.stages}) if plan.outcome is not None and report.ran else None,
        "notes": report.notes, "recipe": plan.recipe,
        **({"result": plan.result()} if plan.result is not None else {}),
    }


def stage_times(stages: list) -> list[tuple[str, float]]:
    """(name, seconds) of each stage, a numbered run of three or more (``round1``..``round52``: ccl's
    label exchange plans enough rounds for the worst case, most of them find nothing to do) as one
    entry, ``round1-52``, with their total."""
    runs: list[list] = []  # [(stage, prefix, number), ...] whose numbers count up by one
    for stage in stages:
        match = re.fullmatch(r"(.*\D)(\d+)", stage.name)
        prefix, number = (match[1], int(match[2])) if match else (None, None)
        last = runs[-1][-1] if runs else None
        if prefix is not None and last is not None and last[1] == prefix and last[2] + 1 == number:
            runs[-1].append((stage, prefix, number))
        else:
            runs.append([(stage, prefix, number)])
    out: list[tuple[str, float]] = []
    for run in runs:
        if len(run) >= 3:
            out.append((f"{run[0][0].name}-{run[-1][2]}", sum(stage.seconds for stage, _, _ in run)))
        else:
            out.extend((stage.name, stage.seconds) for stage, _, _ in run)
    return out


def summary(plan: Plan, report: local.RunReport) -> str:
    total = sum(s.total for s in report.stages)
    voxels = report.total("voxels")
    parts = [f"{plan.operation} finished in {report.seconds:.1f} s: {total} task(s)"]
    if report.skipped:
        parts[-1] += f" ({report.ran} run, {report.skipped} already done by an earlier run)"
    if voxels and report.ran:
        rate = voxels / 1e6 / max(report.seconds, 1e-9)
        parts.append(f"{voxels / 1e6:.1f} MVx at {rate:.1f} MVx/s with {report.workers} worker(s)")
    if report.peak_rss_bytes:
        parts.append(f"peak memory per worker {format_bytes(report.peak_rss_bytes)}")
    if len(report.stages) > 1 and report.ran:
        parts.append("stages " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stage_times(report.stages)))
    if plan.outcome is not None and report.ran:
        parts.append(plan.outcome({s.name: s.totals for s in report.stages}))
    where = urls.display(plan.destination)
    text = "; ".join(parts) + f". Output: {where} — inspect with `pumice info {where}`, look with `pumice view {where}`."
    if report.ran == 0 and total:
        text += " Nothing to do: pass --restart to redo it."
    return text

