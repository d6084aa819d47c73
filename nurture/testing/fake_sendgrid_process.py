"""A fake SendGrid in a child process: start it, wait for its URL, control it over HTTP.

:meth:`FakeSendGrid.start_subprocess <nurture.testing.fake_sendgrid.FakeSendGrid.start_subprocess>`
runs ``python -m nurture.testing.fake_sendgrid`` (its own interpreter, so its
threads do not compete with the client's for the GIL) and returns a
:class:`FakeSendGridProcess`: the handle that reads the URL the child prints,
asks it what happened (``GET /_fake/stats``, ``/_fake/send_ids``,
``/_fake/send_history``), scripts its faults (``POST /_fake/enqueue``) and
stops it.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import urllib.request
from types import TracebackType
from typing import Any, Self


class FakeSendGridProcess:
    """A :class:`FakeSendGrid` in a child process, controlled over HTTP."""

    def __init__(self, args: list[str]) -> None:
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        # The CLI prints its URL once it listens; give it a while to import.
        # (selectors, not select.select: that fails for a descriptor above 1023.)
        with selectors.DefaultSelector() as selector:
            selector.register(self._process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
        line = self._process.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"fake SendGrid did not start: {line!r}")
        self.url = line

    @property
    def pid(self) -> int:
        """The child's process id (a benchmark reads its CPU time by it)."""
        return self._process.pid

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=5) as response:
            result: dict[str, int] = json.load(response)
            return result

    def send_ids(self) -> dict[str, dict[str, int]]:
        """See :meth:`FakeSendGrid.send_ids`."""
        with urllib.request.urlopen(f"{self.url}/_fake/send_ids", timeout=30) as response:
            result: dict[str, dict[str, int]] = json.load(response)
            return result

    def send_history(self) -> dict[str, list[dict[str, Any]]]:
        """See :meth:`FakeSendGrid.send_history`."""
        with urllib.request.urlopen(f"{self.url}/_fake/send_history", timeout=30) as response:
            result: dict[str, list[dict[str, Any]]] = json.load(response)
            return result

    def enqueue(self, kind: str, **options: Any) -> None:
        data = json.dumps({"kind": kind, **options}).encode()
        request = urllib.request.Request(f"{self.url}/_fake/enqueue", data=data, method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
