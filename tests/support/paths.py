"""Where the repository and the tests' data are."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
README = ROOT / "README.md"
