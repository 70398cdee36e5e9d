"""Safe templating for summaries: `{name}` placeholders filled from a dict, nothing else.

No attribute access, indexing or format specs: rule text is data, never code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill `{key}` from `values`; unknown keys stay as written so a typo is visible."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            return m.group(0)
        value = values[key]
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    return _PLACEHOLDER.sub(sub, template)


def placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))
