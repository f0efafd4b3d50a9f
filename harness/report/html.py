"""report.html: report.md as one self-contained page, to open from disk or send as one file.

    html = render_html((suite / "report.md").read_text(), suite, "CLM vs MLM")

The markdown becomes HTML with the `markdown` package (tables; toc, so that every heading gets an
id: `## Headline` -> id "headline", a link target `report.html#headline`). Every image the report
links under the suite's folder (plots/*.png) is inlined as a base64 data URI; an image that is
not a file there becomes its alt text, so the page never loads anything from elsewhere. The
style is a few lines of inline CSS; there is no script. Raw HTML in the markdown (a suite's
description, an error message) is shown as text, never interpreted.
"""

from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as etree
from pathlib import Path

import markdown
from markdown.treeprocessors import Treeprocessor

MEDIA_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.5; color: #1a1a1a;
       max-width: 72rem; margin: 2rem auto; padding: 0 1.5rem; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 .2rem; border-radius: 3px; font-size: .9em; }
img { max-width: 100%; height: auto; display: block; margin: .5rem 0; }
.missing-image { color: #a00; font-style: italic; }
"""


class _InlineImages(Treeprocessor):
    """Each <img> whose src is a file under `root` gets the file's bytes as a data URI; any other
    image (missing, remote, outside the suite's folder) becomes its alt text."""

    def __init__(self, md: markdown.Markdown, root: Path):
        super().__init__(md)
        self.root = root.resolve()

    def run(self, root: etree.Element) -> None:
        for img in root.iter("img"):
            uri = self.data_uri(img.get("src", ""))
            if uri is not None:
                img.set("src", uri)
                continue
            alt = img.get("alt", "")
            img.attrib.clear()
            img.tag, img.text = "span", f"[image not available: {alt}]"
            img.set("class", "missing-image")

    def data_uri(self, src: str) -> str | None:
        path = (self.root / src).resolve()
        if "://" in src or src.startswith(("/", "data:")) or not path.is_relative_to(self.root) \
                or not path.is_file() or path.suffix.lower() not in MEDIA_TYPES:
            return None
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"data:{MEDIA_TYPES[path.suffix.lower()]};base64,{encoded}"


def _converter(suite_dir: Path) -> markdown.Markdown:
    md = markdown.Markdown(extensions=["tables", "toc"], output_format="html")
    md.preprocessors.deregister("html_block")  # raw HTML in the text stays text
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_InlineImages(md, Path(suite_dir)), "inline_images", 5)
    return md


def render_html(markdown_text: str, suite_dir: Path, title: str) -> str:
    """report.html of `markdown_text` (report.md), its images read from under `suite_dir`."""
    body = _converter(suite_dir).convert(markdown_text)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            # An empty icon: without one the browser asks the folder for favicon.ico.
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")
