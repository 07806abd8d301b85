"""Container health check of the worker: exit 0 when /healthz answers 200, 1 otherwise.

Docker (and compose) only *mark* a container unhealthy; nothing restarts it. So when the
worker itself says it is unhealthy (HTTP 503: its loop stopped or stalled), this check also
kills the worker's processes; the container then exits non-zero and its restart policy
(``restart: on-failure`` or ``unless-stopped``) starts a fresh worker, which resumes from
the last commit. A worker that does not answer at all (still starting) is only reported.
Run under ``init: true`` (tini is PID 1), because PID 1 of a container ignores SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.error
import urllib.request

URL = f"http://127.0.0.1:{os.environ.get('ECG_METRICS_PORT', '9108')}/healthz"


def kill_worker() -> None:
    """SIGKILL every process of this container except PID 1 (the init) and ourselves."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me, os.getppid()):
            with contextlib.suppress(OSError):  # gone already, or not ours
                os.kill(int(entry), signal.SIGKILL)


def main() -> int:
    """Probe /healthz once."""
    try:
        with urllib.request.urlopen(URL, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {exc.code} {exc.read().decode(errors='replace').strip()}")
        if exc.code == 503:
            kill_worker()
        return 1
    except OSError as exc:
        print(f"no answer from {URL}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
