"""The command line: parse, build a plan, hand it to a runner, report."""
