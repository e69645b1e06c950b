"""How transformer.py and the stage files are laid out: the one place that cuts them into their parts.

    a file  = its module docstring (from the opening triple quote through the line that closes it)
            + its code (everything after the docstring, up to the demo block)
            + its demo block (from the dashed comment line above DEMO_TITLE to the end of the file;
              empty in transformer.py, whose demo is its own main())

    the code of transformer.py = a preamble (imports, TransformerConfig)
                               + one section per stage, each opened by a dashed header block
                                 `# Stage N · Title · paper`

tools/stages.py (check, sync), stages/bonus/sync.py, talk/present.py, tools/live.py and tools/notebooks.py
all cut files here, so they agree on where a part begins and ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stages.manifest import DEMO_TITLE

DASHED = re.compile(r"# -{20,}")  # a dashed comment line, as the header blocks draw them
MAIN_GUARD = 'if __name__ == "__main__":'


class LayoutError(Exception):
    """transformer.py or a stage file is not laid out the way the rule expects."""


@dataclass(frozen=True)
class Parts:
    """A file cut in three; docstring + code + demo gives the text back."""

    docstring: str
    code: str
    demo: str  # "" when the file has no demo block

    @property
    def code_start(self) -> int:
        """The index (from 0) of the code's first line in the file."""
        return self.docstring.count("\n")

    def code_lines(self) -> tuple[list[str], int]:
        """The code's lines without the blank lines around them, and the file index of the first one."""
        lines, start = self.code.splitlines(), 0
        while start < len(lines) and not lines[start].strip():
            start += 1
        end = len(lines)
        while end > start and not lines[end - 1].strip():
            end -= 1
        return lines[start:end], self.code_start + start

    def library_lines(self, name: str = "the file") -> list[str]:
        """The code's lines without trailing blank lines and, in a file without a demo block (transformer.py),
        without its closing `if __name__ == "__main__":` block."""
        lines = self.code.splitlines()
        if not self.demo:
            guards = [i for i, line in enumerate(lines) if line.startswith(MAIN_GUARD)]
            if not guards:
                raise LayoutError(f"{name} has neither a demo block ({DEMO_TITLE!r}) nor an `if __name__` block")
            lines = lines[: guards[-1]]
        while lines and not lines[-1].strip():
            lines.pop()
        return lines


def split_docstring(text: str, name: str) -> tuple[str, str]:
    """(the module docstring up to and including its closing line, everything after it)."""
    if not text.startswith('"""'):
        raise LayoutError(f'{name} must start with its module docstring ("""), but starts with {text[:20]!r}')
    close = text.find('"""', 3)
    if close < 0:
        raise LayoutError(f"{name}: the module docstring is never closed")
    cut = text.find("\n", close)
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def block_start(text: str, title_start: int, name: str, title: str) -> int:
    """Where the dashed line just above the title line that starts at title_start begins."""
    start = text.rfind("\n", 0, max(title_start - 1, 0)) + 1
    if not DASHED.fullmatch(text[start:title_start].rstrip("\n")):
        raise LayoutError(f"{name}: the line above {title!r} must be a dashed comment line (# -----...)")
    return start


def split_parts(text: str, name: str, require_demo: bool = False) -> Parts:
    """A file as (docstring, code, demo block); require_demo: a file without a demo block is an error."""
    docstring, rest = split_docstring(text, name)
    title = re.search(rf"^{re.escape(DEMO_TITLE)}$", rest, re.M)
    if title is None:
        if require_demo:
            raise LayoutError(f"{name} has no demo block: expected a dashed header titled {DEMO_TITLE!r}")
        return Parts(docstring, rest, "")
    demo_start = block_start(rest, title.start(), name, DEMO_TITLE)
    return Parts(docstring, rest[:demo_start], rest[demo_start:])


def section_header(code: str, number: int) -> re.Match | None:
    """The header line `# Stage N · ...` of section `number` in transformer.py's code, if there is one."""
    return re.search(rf"^# Stage {number} · .*$", code, re.M)


def section_start(code: str, number: int, name: str = "transformer.py") -> int:
    """Where section `number`'s dashed header block begins in transformer.py's code."""
    header = section_header(code, number)
    if header is None:
        raise LayoutError(f"{name} has no section header '# Stage {number} · Title · paper'")
    return block_start(code, header.start(), name, header.group())


def sections(code: str, numbers: list[int], name: str = "transformer.py") -> tuple[str, dict[int, str]]:
    """transformer.py's code cut at its section headers: (the preamble before the first, {number: section}),
    each section from its dashed header block up to the next one (the last one to the end of the code)."""
    starts = [section_start(code, n, name) for n in numbers]
    if starts != sorted(starts):
        raise LayoutError(f"{name}: the sections must come in the order {numbers}")
    ends = [*starts[1:], len(code)]
    return code[: starts[0]], {n: code[a:b] for n, a, b in zip(numbers, starts, ends, strict=True)}
