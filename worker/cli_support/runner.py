"""One runner for every entry point: it maps errors to one clear line and one exit code.

The codes mean the same in every tool (README "Exit codes", docs/design.md):

====  ==============================================================================
0     done; for ``ecg-worker`` and ``ecg-alerts`` also a stop by Ctrl-C/SIGTERM, which is
      their normal end (the worker first finishes and commits the batch in hand)
1     infrastructure failure: Kafka unreachable or failing, a topic missing, a publish or
      commit not acknowledged. Nothing is wrong with the input; retry when Kafka is back.
2     usage, configuration, artifact or data error: fix the named file or option first
      (argparse's own usage errors exit 2 too)
3     finished, but not everything went through: ``ecg-score`` rejected rows (the others
      are scored), ``ecg-demo``'s end-to-end checks failed
130   interrupted (Ctrl-C or SIGTERM) before the work was done
====  ==============================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum

from worker.core.errors import BrokerError, EcgError


class ExitCode(IntEnum):
    """Process exit codes shared by every command (see the module docstring)."""

    OK = 0
    INFRASTRUCTURE = 1
    USAGE = 2
    INCOMPLETE = 3
    INTERRUPTED = 130


# Third-party modules only the training extra installs: a missing one is a setup problem.
TRAIN_EXTRA_HINT = "pip install 'ecg-anomaly[train]'"


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """Run a command's ``body`` and turn the product's errors into an exit code.

    ``body`` returns its own code when it finishes (0, or ``INCOMPLETE``); an exception it
    raises becomes one ``prog: error: ...`` line on stderr and the code of its kind.
    """
    try:
        return int(body())
    except BrokerError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ExitCode.INFRASTRUCTURE
    except EcgError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] in ("worker", "trainer", "clients"):
            raise  # a bug or a broken install of this project, not a missing extra
        print(
            f"{prog}: error: {exc.name} is not installed; install the training extra: "
            f"{TRAIN_EXTRA_HINT}",
            file=sys.stderr,
        )
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
