"""User-facing errors.

Every mistake a user can make raises a PumiceError whose message says what is wrong and what to
do about it, in one line. The CLI prints it as ``pumice: error: <message>`` and exits with
``exit_code``: 2 for bad input (the default), 1 for failures at run time.
"""


class PumiceError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class SourceError(PumiceError):
    """The input data cannot be read or does not make sense (missing, truncated, mixed shapes)."""


class LayerError(PumiceError):
    """A Precomputed layer is missing, malformed, or incompatible with the request."""


class RunFailed(PumiceError):
    """Tasks failed at run time; rerunning the same command resumes."""

    exit_code = 1
