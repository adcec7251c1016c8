"""A report as data: sections of paragraphs, notes, lists, tables and figures, and its two renderings.

report.md and report.html are the same document: analysis.report builds it once, and the Jinja2 templates in
analysis/templates/ (report.md.j2, report.html.j2) turn it into Markdown (figures linked beside it) and into a
self-contained HTML page (figures embedded).
"""
import base64
from dataclasses import dataclass, field

import jinja2
import pandas as pd

from . import present


@dataclass
class Span:
    text: str
    emphasis: bool = False


@dataclass
class Paragraph:
    spans: list  # Span
    kind: str = "paragraph"


@dataclass
class Note:
    """A paragraph set apart: the finding a section leads with."""
    text: str
    kind: str = "note"


@dataclass
class Bullets:
    items: list  # str
    kind: str = "bullets"


@dataclass
class Fields:
    """A list of "name: value" pairs, the values as code (paths, names, times)."""
    pairs: list  # (name, value)
    kind: str = "fields"


@dataclass
class Table:
    frame: pd.DataFrame
    label: str = ""   # a heading of its own, for several tables in one section
    kind: str = "table"


@dataclass
class Figure:
    """A drawn figure (figures/NAME.png and .svg beside report.md), or the reason it was not drawn."""
    name: str
    title: str
    caption: str = ""
    png: bytes | None = None
    skipped: str | None = None
    svg: bool = True   # figures/NAME.svg exists too
    kind: str = "figure"


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


@dataclass
class Document:
    title: str
    sections: list = field(default_factory=list)   # the first may have no title (what precedes the first heading)


def paragraph(*parts) -> Paragraph:
    """paragraph("plain ", emphasis("stressed"), " plain")."""
    return Paragraph([p if isinstance(p, Span) else Span(p) for p in parts])


def emphasis(text: str) -> Span:
    return Span(text, emphasis=True)


def _html_table(frame: pd.DataFrame) -> list:
    """The header and the cells of a table as text (escaped by the template)."""
    return [[str(c) for c in frame.columns], [[present.cell(v) for v in row] for row in frame.itertuples(index=False)]]


_ENVS = {}


def _env(fmt: str) -> jinja2.Environment:
    if fmt not in _ENVS:
        env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"), autoescape=fmt == "html",
                                 trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                 undefined=jinja2.StrictUndefined)
        env.filters["markdown_table"] = present.to_markdown
        env.filters["html_table"] = _html_table
        env.filters["base64"] = lambda data: base64.b64encode(data).decode()
        _ENVS[fmt] = env
    return _ENVS[fmt]


def render(doc: Document, fmt: str) -> str:
    """The document as "md" or "html"."""
    text = _env(fmt).get_template(f"report.{fmt}.j2").render(doc=doc)
    return text.rstrip("\n") + "\n"
