"""The report's document model renders to Markdown and HTML with the same content (analysis.document)."""
import pandas as pd

from analysis import document as doc


def _document():
    table = pd.DataFrame({"snapshot": ["e1 <early>", "e2"], "acc %": [0.5, float("nan")]})
    return doc.Document("Report: a & b", [
        doc.Section("", [doc.Fields([("experiment", "/x/y")])]),
        doc.Section("Summary", [doc.Bullets(["one", "two <2>"]),
                                doc.paragraph("See ", doc.emphasis("the figure"), " below.")]),
        doc.Section("Findings", [doc.Note("a note"), doc.Bullets([])]),
        doc.Section("Tables", [doc.Table(table, "Search space"), doc.Table(pd.DataFrame())]),
        doc.Section("Figures", [doc.Figure("f", "A figure", "Its caption.", png=b"\x89PNG"),
                                doc.Figure("g", "Skipped", skipped="no data"),
                                doc.Figure("t", "No SVG", "Drawn as PNG only.", png=b"png", svg=False)]),
    ])


def test_markdown_rendering():
    md = doc.render(_document(), "md")
    assert md.startswith("# Report: a & b\n\n- **experiment**: `/x/y`\n\n## Summary\n\n- one\n- two <2>\n\n"
                         "See *the figure* below.\n\n## Findings\n\n> a note\n\n")
    assert ("Search space:\n\n| snapshot | acc % |\n|---|---|\n| e1 <early> | 0.5 |\n| e2 |  |\n\n_(no rows)_\n\n"
            in md)
    assert ("### A figure\n\n![A figure](figures/f.png)\n\nIts caption.\n([SVG](figures/f.svg))\n\n"
            "### Skipped\n\n_Not drawn: no data._\n\n### No SVG\n\n![No SVG](figures/t.png)\n\nDrawn as PNG only.\n"
            in md)
    assert "t.svg" not in md and md.endswith("Drawn as PNG only.\n")


def test_html_rendering_is_escaped_and_self_contained():
    html = doc.render(_document(), "html")
    assert "<title>Report: a &amp; b</title>" in html and "<h1>Report: a &amp; b</h1>" in html
    assert "<li><b>experiment</b>: <code>/x/y</code></li>" in html and "<li>two &lt;2&gt;</li>" in html
    assert "<p>See <i>the figure</i> below.</p>" in html and "<p class='note'>a note</p>" in html
    assert "<h3>Search space</h3>" in html and "<td>e1 &lt;early&gt;</td><td>0.5</td>" in html
    assert "<td>e2</td><td></td>" in html and "<p><em>(no rows)</em></p>" in html
    assert "<img alt='A figure' src='data:image/png;base64,iVBORw=='><p>Its caption.</p>" in html
    assert "<p class='skip'>Not drawn: no data.</p>" in html and "figures/" not in html
    assert html.rstrip().endswith("</body></html>")
