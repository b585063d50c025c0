"""The values a constant may take: its domain, declared beside it as the constant's annotation.

    LATENT_DIM: Int(1) = 100  # size of z
    BETA1: Real("[0, 1)") = 0.5  # Adam beta1
    DATASET: Choice("mnist", "fake") = "mnist"  # which data set
    DATA_DIR: Folder() = "data"  # where the data sets are

config.check reads them (the module's __annotations__) after the overrides, before anything is loaded,
allocated or written: a value outside is one line, `--name=value is not <the domain>`, and exit 2. A
domain says what it holds in words (`str(domain)`: the --help line and the error line) and why a value
is outside it (`domain.problem(value)`, None when inside). A constant's type is its default's (config.convert);
the domain checks the converted value: nan and inf where they do not belong, a bool where an int belongs.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

_INTERVAL = re.compile(r"([\[(])\s*(-?[\d.e+-]+|-inf)\s*,\s*(-?[\d.e+-]+|inf)\s*([\])])")


class Domain:
    """A set of values; subclasses say which (`holds`) and how it reads (`__str__`)."""

    def holds(self, value: Any) -> bool:
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        """Why `value` is outside, as the end of `--name=value ...`; None when it is inside."""
        return None if self.holds(value) else f"is not {self}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Int(Domain):
    """Whole numbers in [low, high]; `off` a value outside them that turns a feature off (0), `auto` the word
    "auto" (common/cadence.py's budget), `power_of_two` only the powers of two."""

    def __init__(
        self, low: int, high: int | None = None, off: int | None = None, auto: bool = False, power_of_two: bool = False
    ):
        self.low, self.high, self.off, self.auto, self.power_of_two = low, high, off, auto, power_of_two

    def holds(self, value: Any) -> bool:
        if (self.auto and value == "auto") or (self.off is not None and _is_int(value) and value == self.off):
            return True
        if not _is_int(value) or value < self.low or (self.high is not None and value > self.high):
            return False
        return not self.power_of_two or value & (value - 1) == 0

    def __str__(self) -> str:
        kind = "a power of two" if self.power_of_two else "an integer"
        where = f"in [{self.low}, {self.high}]" if self.high is not None else f">= {self.low}"
        first = ("auto or " if self.auto else "") + (f"{self.off} (off) or " if self.off is not None else "")
        return f"{first}{kind} {where}"


class Real(Domain):
    """Finite numbers in an interval written as in mathematics: "[0, 1)", "(0, 1]", "(0, inf)", "[0, inf)"."""

    def __init__(self, interval: str):
        match = _INTERVAL.fullmatch(interval.strip())
        if not match:
            raise ValueError(f"not an interval: {interval!r} (write it as [0, 1), (0, inf) ...)")
        left, low, high, right = match.groups()
        self.low, self.high = float(low), float(high)
        self.low_open, self.high_open = left == "(", right == ")"
        self.interval = interval.strip()

    def holds(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if math.isinf(self.high):  # "(0, inf)" reads "a finite number > 0"
            return f"a finite number {'>' if self.low_open else '>='} {self.low:g}"
        return f"a number in {self.interval}"


class Choice(Domain):
    """One of a few words."""

    def __init__(self, *options: str):
        self.options = tuple(options)

    def holds(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return f"one of: {', '.join(self.options)}"


class Flag(Domain):
    """True or False."""

    def holds(self, value: Any) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "true or false"


class Switch(Domain):
    """A speed switch (common/speed.py): "auto", True or False."""

    def holds(self, value: Any) -> bool:
        return isinstance(value, bool) or value == "auto"

    def __str__(self) -> str:
        return "auto, true or false"


class Text(Domain):
    """Text matching `pattern` (any text by default), described as `says`."""

    def __init__(self, pattern: str = r".*", says: str = "any text"):
        self.pattern, self.says = re.compile(pattern, re.DOTALL), says

    def holds(self, value: Any) -> bool:
        return isinstance(value, str) and self.pattern.fullmatch(value) is not None

    def __str__(self) -> str:
        return self.says


class Words(Domain):
    """A comma list of some of `words` (in any order, any case), or "" for none (AUGMENT)."""

    def __init__(self, *words: str):
        self.words = tuple(words)

    def holds(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return all(word.strip().lower() in self.words for word in value.split(",") if word.strip())

    def __str__(self) -> str:
        return f"'' or a comma list of {', '.join(self.words)}"


class Folder(Domain):
    """A path to a folder: one that exists, or (unless `exists`) one that can be made there; `empty` allows ""
    (the constant's own meaning: a default folder, or none)."""

    def __init__(self, exists: bool = False, empty: bool = False):
        self.exists, self.empty = exists, empty

    def holds(self, value: Any) -> bool:
        return self.problem(value) is None

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str) or (value == "" and not self.empty):
            return f"is not {self}"
        if value == "":
            return None
        path = Path(value)
        if path.exists():
            return None if path.is_dir() else f"is not {self}: it is a file"
        if self.exists:
            return f"is not {self}: it does not exist"
        blocking = next((parent for parent in path.parents if parent.exists()), None)  # the first that exists
        if blocking is not None and not blocking.is_dir():
            return f"is not {self}: {blocking} is a file"
        return None

    def __str__(self) -> str:
        what = "an existing folder" if self.exists else "a folder (or a path where one can be made)"
        return f"'' or {what}" if self.empty else what


class File(Domain):
    """A path to an existing file, or "" for none."""

    def holds(self, value: Any) -> bool:
        return isinstance(value, str) and (value == "" or Path(value).is_file())

    def __str__(self) -> str:
        return "'' or an existing file"


class Device(Text):
    """A device name (common/device.py says whether this machine has it)."""

    def __init__(self) -> None:
        super().__init__(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps")
