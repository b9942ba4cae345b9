"""The README and the pages in docs/ hold together: the README stays short and keeps its
two quickstart commands, every link between them leads somewhere, and every file of the
repository they name is there (a module moved is a page to update)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.paths import DOCS, README, ROOT

PAGES = [README, *sorted(DOCS.glob("*.md"))]
# [text](target): the target up to a space or the closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# A path of the repository in backquotes: `worker/amqp/consumer.py`, `deploy/k8s/`.
REPO_PATH = re.compile(
    r"`((?:worker|schemas|tests|bench|deploy|client|examples|docs)/[\w./*-]*)`")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_the_readme_is_short_and_keeps_the_quickstart() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 300
    quickstart = text[text.index("## Quickstart"):text.index("\n## ", text.index("## Quickstart"))]
    assert "./dev worker" in quickstart
    assert "./dev test" in quickstart


def test_every_link_between_the_pages_leads_somewhere() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve()
              for target in LINK.findall(README.read_text())}
    assert not [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]


def test_every_file_the_pages_name_is_there() -> None:
    missing = []
    for page in PAGES:
        for path in REPO_PATH.findall(page.read_text()):
            found = list(ROOT.glob(path)) if "*" in path else [ROOT / path]
            if not any(p.exists() for p in found):
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "\n".join(missing)


def test_every_module_the_architecture_page_lists_is_there() -> None:
    """Under a heading naming a package (### `worker/amqp/`: ...), each `module.py`."""
    missing = []
    for section in re.split(r"^### ", (DOCS / "architecture.md").read_text(), flags=re.M):
        package = re.match(r"`((?:worker|schemas)/[\w/]*)`", section)
        if package is None:
            continue
        for module in re.findall(r"`(\w+\.py)`", section):
            if not (ROOT / package.group(1) / module).exists():
                missing.append(f"{package.group(1)}{module}")
    assert not missing, missing
