"""Every relative link and every repository path the README and docs/ name resolves inside the
repository: the docs stand alone (no links to files that are not shipped)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
# code spans that name a path: one going up (`../x`), or one under a top-level folder of the repo
# (not data/: the storage root is made at run time, so `data/...` names a runtime path)
TOP = sorted(
    p.name
    for p in ROOT.iterdir()
    if p.is_dir() and not p.name.startswith(".") and p.name not in ("data", "__pycache__")
)
PATH = re.compile(
    r"`((?:\.\./)+[A-Za-z0-9_./-]+|(?:" + "|".join(map(re.escape, TOP)) + r")/[A-Za-z0-9_./-]*)`"
)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def targets(doc: Path) -> list[tuple[str, Path]]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        found.append((target, (doc.parent / target.split("#", 1)[0]).resolve()))
    for target in PATH.findall(text):
        base = doc.parent if target.startswith("../") else ROOT
        found.append((target, (base / target.split(" ")[0]).resolve()))
    return found


def test_every_relative_link_and_path_resolves_inside_the_repository():
    broken = []
    for doc in documents():
        for target, path in targets(doc):
            inside = path == ROOT or ROOT in path.parents
            if not inside or not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_check_sees_links_and_paths():
    readme = dict(targets(ROOT / "README.md"))
    assert "docs/dashboard-batches.png" in readme and "docs/scale-out.md" in readme
