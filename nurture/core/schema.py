"""The JSON Schema of the sequence file format, generated from the model.

Committed at ``schemas/sequence.schema.json`` so editors (the YAML language
server) can autocomplete and check files; a test fails when it is stale.
"""

from __future__ import annotations

import json
from typing import Any

from nurture.core.model import Sequence


def sequence_schema() -> dict[str, Any]:
    schema = Sequence.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "nurture sequence (format version 1)",
    }


def sequence_schema_text() -> str:
    return json.dumps(sequence_schema(), indent=2, ensure_ascii=False) + "\n"
