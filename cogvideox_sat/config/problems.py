"""Validation problems: what is wrong, where (file and key path), and what to change."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One finding of validation. `key` is a dotted path such as `args.train_iters`."""

    key: str
    message: str
    fix: str = ""
    file: str = ""
    warning: bool = False

    def render(self) -> str:
        where = f"{self.file}: " if self.file else ""
        level = "warning: " if self.warning else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{level}{where}{self.key}: {self.message.rstrip('.')}.{fix}"


class ConfigValidationError(ValueError):
    """Raised with every problem at once, so a user fixes them in one go."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(p.render() for p in problems))


def closest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """'did you mean' text listing the closest valid names (or a few valid names if none is close)."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if close:
        return "did you mean " + " / ".join(close) + "?"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"valid keys: {shown}"
