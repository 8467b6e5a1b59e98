"""The repo's documents are self-contained: every reference to docs/method.md, docs/api.md and
docs/development.md lands on a real section, and nothing points at a document outside the repo."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("method", "api", "development")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".yml", ".yaml", ".json", ".html", ".cfg", ".txt", ""}
# docs/X.md, an optional "§N" (or "§N-§M"), then an optional quoted section name: "…", ("…") or ``…``.
REF = re.compile(
    r"docs/(method|api|development)\.md"
    r"(?:\s*§(\d)(?:-§(\d))?)?"
    r"(?:[,:]?\s*\(?(?:\"([^\"]+)\"|“([^”]+)”))?"
)


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = []
    for name in out.splitlines():
        p = ROOT / name
        if p.suffix in TEXT_SUFFIXES and p.is_file():
            files.append(p)
    return files


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("`", "")).strip().lower()


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    return {d: (ROOT / "docs" / f"{d}.md").read_text(encoding="utf-8") for d in DOCS}


def test_no_reference_outside_the_repo() -> None:
    bad = re.compile(r"\.\./shared|\bALGORITHM\.md|(?<![a-z/-])API\.md|\bSTYLE\.md")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _tracked_text_files()
        if p.name != "test_docs.py"
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if bad.search(line)
    ]
    assert hits == []


def test_every_reference_lands_on_a_section(docs: dict[str, str]) -> None:
    sections = {int(m.group(1)) for m in re.finditer(r"^## (\d)\. ", docs["method"], re.M)}
    assert sections == set(range(1, 8))
    missing = []
    n_refs = 0
    for p in _tracked_text_files():
        if p.name == "test_docs.py" or p.parent.name == "compressed":
            continue
        for m in REF.finditer(p.read_text(encoding="utf-8", errors="replace")):
            n_refs += 1
            doc, first, last, quoted = m.group(1), m.group(2), m.group(3), m.group(4) or m.group(5)
            for n in (first, last):
                if n is not None and int(n) not in sections:
                    missing.append(f"{p.relative_to(ROOT)}: docs/{doc}.md §{n}")
            if quoted and _norm(quoted.strip(".")) not in _norm(docs[doc]):
                missing.append(f"{p.relative_to(ROOT)}: docs/{doc}.md {quoted!r}")
    assert n_refs > 100  # the regex really finds the references
    assert missing == [], "\n".join(missing)
