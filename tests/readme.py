"""The README's code blocks, as the README test reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"
#: An HTML comment right before a block that the README test must not run, with the reason.
NOT_RUN = re.compile(r"<!-- README test: not run \((?P<why>[^)]+)\) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  #: 1-based line of the opening fence
    not_run: str | None  #: why the README test leaves it alone, if it does


def blocks(text: str | None = None) -> list[Block]:
    lines = (README.read_text() if text is None else text).splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening or not opening["lang"]:
            index += 1
            continue
        before = lines[index - 1] if index else ""
        marked = NOT_RUN.search(before)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        found.append(Block(opening["lang"], "\n".join(lines[index + 1 : end]) + "\n", index + 1, marked and marked["why"]))
        index = end + 1
    return found
