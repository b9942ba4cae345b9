"""Where the repository and the tests' data are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
README = ROOT / "README.md"
# The pages the README links to: producers, operations, configuration, deployment ...
DOCS = ROOT / "docs"
