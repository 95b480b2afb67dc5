"""Licences: the Hub licence ids we can write a LICENSE file for, the LICENSE text (the
weights' licence plus each corpus source's own terms), and the dataset's one licence id."""
from __future__ import annotations

import datetime as _dt

# Hub license identifiers we can write a LICENSE file for: (full name, canonical text URL).
LICENSES: dict[str, tuple[str, str]] = {
    "mit": ("MIT License", "https://opensource.org/licenses/MIT"),
    "apache-2.0": ("Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "bsd-3-clause": ("BSD 3-Clause License", "https://opensource.org/licenses/BSD-3-Clause"),
    "cc-by-4.0": ("Creative Commons Attribution 4.0", "https://creativecommons.org/licenses/by/4.0/legalcode"),
    "cc-by-sa-4.0": ("Creative Commons Attribution-ShareAlike 4.0",
                     "https://creativecommons.org/licenses/by-sa/4.0/legalcode"),
    "cc-by-nc-4.0": ("Creative Commons Attribution-NonCommercial 4.0",
                     "https://creativecommons.org/licenses/by-nc/4.0/legalcode"),
    "cc0-1.0": ("Creative Commons Zero 1.0 (public domain dedication)",
                "https://creativecommons.org/publicdomain/zero/1.0/legalcode"),
    "openrail": ("Open RAIL License", "https://huggingface.co/blog/open_rail"),
    "other": ("Other (see the model card)", ""),
}
MIT_TEXT = """MIT License

Copyright (c) {year} {holder}

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def license_text(license_id: str, holder: str = "the londonlm contributors",
                 corpus: dict | None = None, year: int | None = None) -> str:
    """The LICENSE file: the weights/code licence plus the corpus licences per source."""
    year = year or _dt.date.today().year
    name, url = LICENSES[license_id]
    if license_id == "mit":
        head = MIT_TEXT.format(year=year, holder=holder)
    elif license_id == "other":
        head = (f"Copyright (c) {year} {holder}\n\nThe model is released under custom terms "
                f"described in README.md.\n")
    else:
        head = (f"Copyright (c) {year} {holder}\n\nThe model weights and code in this repository "
                f"are licensed under the {name} ({license_id}).\nThe full licence text is at "
                f"{url}\n")
    lines = [head.rstrip("\n"), "", "-" * 72, "Training corpus licences", "-" * 72, "",
             "The licence above covers the model weights and code. The texts the model was "
             "trained on keep their own terms:", ""]
    if corpus and corpus.get("by_source"):
        for src, s in corpus["by_source"].items():
            lines.append(f"- {src} ({s['kind']}, {s['documents']} documents): "
                         f"{', '.join(s['licenses'])}")
    else:
        lines.append("- (corpus manifest not available when this file was written)")
    return "\n".join(lines) + "\n"


def dataset_license(corpus: dict) -> str:
    """One Hub licence id for the dataset: the shared one when every source agrees and it
    is a known id, else ``other`` (the card then lists licences per source)."""
    lic = {l.lower() for s in corpus["by_source"].values() for l in s["licenses"]}
    known = {"public-domain": "cc0-1.0", "pd": "cc0-1.0", "cc0": "cc0-1.0"}
    mapped = {known.get(l, l) for l in lic}
    if len(mapped) == 1 and next(iter(mapped)) in LICENSES:
        return next(iter(mapped))
    return "other"
