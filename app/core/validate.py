"""Interim validator (replaced by the full validator of issue 4)."""

from __future__ import annotations

from collections.abc import Sequence

import pygohcl

from app.core.model import Check, RenderedFile, ValidationReport
from app.errors import ValidationFailed


class Validator:
    def __init__(self, terraform_bin: str | None = None, provider_mirror: str | None = None) -> None:
        pass

    def validate(
        self, files: Sequence[RenderedFile]
    ) -> tuple[tuple[RenderedFile, ...], ValidationReport]:
        for f in files:
            try:
                pygohcl.loads(f.content)
            except pygohcl.HCLParseError as e:
                raise ValidationFailed(f"{f.path}: {e}") from e
        return tuple(files), ValidationReport((Check("hcl-parse", "passed"),))
