"""The API's request parser: DRF's JSON parser, with a 400 for JSON too deep to read.

Python's `json` reads nested lists and objects by recursion: a body nested deeper than
the interpreter's recursion limit raises RecursionError, which DRF's parser (it turns
ValueError into a 400) lets out as a 500. How deep params may nest is the registry's
rule (`jobs.registry.MAX_PARAMS_DEPTH`), checked once the body is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

TOO_DEEP = "JSON parse error - lists and objects are nested too deeply to read"


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None
