"""User text (names, paths, prompts) made safe for where it is shown: markdown, HTML, plot labels."""

from __future__ import annotations

import html
import textwrap


def code(text) -> str:
    """`text` as a markdown code span, safe in a table cell: no HTML, no markup, no cell break."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def cell(text) -> str:
    """Plain text in a markdown table cell: markup and HTML shown as characters."""
    escaped = html.escape(str(text), quote=False).replace("\n", " ")
    for char in "\\|*_[]#`~":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def plot_text(text, width: int | None = None) -> str:
    """Text for a matplotlib title or label: `$` would start math text (and `$\\foo$` crash it)."""
    text = str(text).replace("$", r"\$")
    return "\n".join(textwrap.wrap(text, width)) if width else text


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def token_pieces(ids: list[int], tokenizer) -> list[str]:
    """Each token's text, decoded once per token but never split inside a character: a character
    spread over several tokens (a multi-byte emoji in a byte-level vocabulary) is given to the last of
    them, the others show nothing (decoding them one by one gives U+FFFD)."""
    singles = tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=False)
    out, start = [], 0
    for i, text in enumerate(singles):
        if "\ufffd" not in text:
            if start < i:  # close a run of partial tokens with this one
                out[start:] = [""] * (i - start)
                out.append(tokenizer.decode(ids[start : i + 1], skip_special_tokens=False))
            else:
                out.append(text)
            start = i + 1
            continue
        joined = tokenizer.decode(ids[start : i + 1], skip_special_tokens=False)
        if "\ufffd" not in joined:
            out[start:] = [""] * (i - start)
            out.append(joined)
            start = i + 1
        else:
            out.append("")  # still inside a character
    if start < len(ids):  # a character cut off at the end: its bytes as they are
        out[start:] = [""] * (len(ids) - 1 - start) + [tokenizer.decode(ids[start:], skip_special_tokens=False)]
    return out
