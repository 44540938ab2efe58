"""The README's worked cost example: `llmt plan` on 10,000 reviews of about 200 tokens.

    python examples/costs/plan_10k.py

Copies the example project (the repository's project.yml, models, prompts, schemas) to a temporary
directory, replaces its seed with 10,000 reviews built from the example's own texts (each about 200 tokens
with o200k_base, all different), builds the inputs with `llmt run --exclude review_insights+`, then prints
`llmt plan` (which sends and writes nothing).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmt.tokens import encoding, encoding_name

ROWS = 10_000
TOKENS = 200
EXAMPLE = Path(__file__).resolve().parents[2]  # the repository is the example project
PROJECT_FILES = ("project.yml", "models", "prompts", "schemas")


def reviews() -> list[dict[str, str]]:
    enc = encoding(encoding_name("gpt-4o-mini"))
    with (EXAMPLE / "data" / "reviews.csv").open(encoding="utf-8") as f:
        base = [r for r in csv.DictReader(f) if r["review_text"].strip()]
    pool = [enc.encode_ordinary(" " + r["review_text"]) for r in base]
    out = []
    for i in range(ROWS):
        row = dict(base[i % len(base)])
        tokens = enc.encode_ordinary(f"Order {i + 1}:")  # every review is different
        k = 0
        while len(tokens) < TOKENS:  # pad with other reviews' text, then cut to size
            tokens += pool[(i * 7 + k) % len(pool)]
            k += 1
        row.update(review_id=str(i + 1), review_text=enc.decode(tokens[:TOKENS]).strip())
        out.append(row)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "reviews"
        root.mkdir()
        for rel in PROJECT_FILES:
            (shutil.copytree if (EXAMPLE / rel).is_dir() else shutil.copyfile)(EXAMPLE / rel, root / rel)
        (root / "data").mkdir()
        rows = reviews()
        with (root / "data" / "reviews.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        llmt = [sys.executable, "-m", "llmt"]
        subprocess.run([*llmt, "run", "--exclude", "review_insights+"], cwd=root, check=True, capture_output=True)
        subprocess.run([*llmt, "plan", *sys.argv[1:]], cwd=root, check=True)


if __name__ == "__main__":
    main()
