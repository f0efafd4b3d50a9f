"""Headline: the report's answer in sentences, right under the title.

Until the paired statistics write it, the section says where the answer is to be read, so that
report.md and report.html keep one anchor (`#headline`) for it.
"""

from __future__ import annotations


def headline_section() -> str:
    return ("## Headline\n\nNo headline sentence yet: compare the objectives in the tables and plots "
            "below, where every mean carries its 95% interval over seeds.")
