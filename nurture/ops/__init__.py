"""Operations: what an admin runs a deployment with.

* :mod:`nurture.ops.logs`: the log format (text or one JSON object per record,
  with a stable ``action`` key) and the redaction every record goes through;
* :mod:`nurture.ops.metrics`: ``GET /metrics``'s collector (ledger counts,
  queue depth and heartbeat ages read from the database at scrape time) and the
  in-process instruments (pass duration, webhook events);
* :mod:`nurture.ops.doctor`: the checks ``nurture doctor`` prints;
* :mod:`nurture.ops.backup`: ``nurture db backup``.

Light at import (the CLI imports :mod:`nurture.ops.logs` on every start);
heavy libraries are imported inside the functions that use them.
"""
