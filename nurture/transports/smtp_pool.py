"""The SMTP transport's connection pool: at most ``size`` connections, idle
ones reused newest first, and one idle for longer than ``idle_timeout``
seconds closed rather than reused (servers drop idle clients, RFC 5321
§4.5.3.2.7). Whether a reused connection still works is the transport's
concern (:mod:`nurture.transports.smtp`), found on its first command."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable

from nurture.errors import TransientSendError


class ConnectionPool:
    """At most ``size`` connections; idle ones are reused, newest first."""

    def __init__(
        self, connect: Callable[[], smtplib.SMTP], size: int, idle_timeout: float, wait: float
    ) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()
        self._idle_timeout = idle_timeout
        self._wait = wait
        self.closed = False

    def checkout(self) -> tuple[smtplib.SMTP, bool]:
        """A connection and whether it was reused. Connect errors propagate."""
        if not self._slots.acquire(timeout=self._wait):
            raise TransientSendError("not sent: every SMTP connection stayed busy")
        try:
            stale = []
            found = None
            with self._lock:
                now = time.monotonic()
                while self._idle:
                    connection, since = self._idle.pop()
                    if now - since < self._idle_timeout:
                        found = connection
                        break
                    stale.append(connection)
            for connection in stale:
                close_quietly(connection)
            if found is not None:
                return found, True
            return self._connect(), False
        except BaseException:
            self._slots.release()
            raise

    def checkin(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            keep = not self.closed
            if keep:
                self._idle.append((connection, time.monotonic()))
        if not keep:
            close_quietly(connection, polite=True)
        self._slots.release()

    def discard(self, connection: smtplib.SMTP) -> None:
        close_quietly(connection)
        self._slots.release()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            close_quietly(connection, polite=True)


def close_quietly(connection: smtplib.SMTP, *, polite: bool = False) -> None:
    try:
        if polite:
            connection.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        connection.close()
