"""Page text made safe for the body format a channel renders (text, HTML, Markdown).

A page's title and body are plain text, and parts of them come from devices (an ifName, a
sysName, a UPS model, an SSH command's output): hostile until escaped. A channel that renders
HTML (e-mail) or Markdown (DingTalk, WeCom, Matrix, Slack-like ones) gets the text escaped
for that format, so `<a href="https://phish">` or `[click](https://phish)` shows as the
characters it is, never as a link or markup; titles and subjects are one line, cut to
`TITLE_MAX` characters.
"""

from __future__ import annotations

import html
import re

TEXT = "text"
HTML = "html"
MARKDOWN = "markdown"
FORMATS = (TEXT, HTML, MARKDOWN)

# A subject line or a chat title a phone shows whole, and well under SMTP's 998.
TITLE_MAX = 120

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that make
# markup (emphasis, links, images, headings, lists, tables, code, HTML, entities).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~=&])")
# A URL shown in Markdown as an autolink (`<...>`): it reads as itself and stays clickable
# (an ack link), and escaping its dots would break it.
# Trailing punctuation is the sentence's, not the URL's (as GFM reads a bare URL).
_URL = re.compile(r"https?://[^\s<>\"'`\\]*[^\s<>\"'`\\).,;:!?\]]")


def one_line_title(title: str) -> str:
    """The title on one line (control characters and line breaks become a space), cut to
    TITLE_MAX characters with an ellipsis."""
    line = " ".join(_CONTROL.sub(" ", title).split())
    if len(line) > TITLE_MAX:
        line = line[: TITLE_MAX - 1].rstrip() + "…"
    return line


def escape_markdown(text: str) -> str:
    """Plain text as Markdown that renders as exactly that text (URLs as autolinks)."""
    out: list[str] = []
    pos = 0
    for match in _URL.finditer(text):
        out.append(_MARKDOWN_SPECIAL.sub(r"\\\1", text[pos : match.start()]))
        out.append(f"<{match.group(0)}>")
        pos = match.end()
    out.append(_MARKDOWN_SPECIAL.sub(r"\\\1", text[pos:]))
    return "".join(out)


def escape_html(text: str) -> str:
    """Plain text as HTML that shows as exactly that text, line breaks kept."""
    return html.escape(text, quote=True).replace("\r\n", "\n").replace("\n", "<br/>\n")


def render(text: str, body_format: str) -> str:
    """Plain text rendered for a channel whose body format is `body_format`."""
    if body_format == HTML:
        return escape_html(text)
    if body_format == MARKDOWN:
        return escape_markdown(text)
    return text
