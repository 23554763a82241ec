"""Agreement of `ownwords.data.verify.grade` with the gold answers of real benchmarks.

    python benchmarks/verify_agreement.py [--data ../shared/data]

MATH500: each gold `answer` graded against the last \\boxed{} of its own reference solution.
GSM8K: each gold (`#### n`) graded against itself written as `\\boxed{n}` with thousands separators.
Last line: `math500_agreement=<x> gsm8k_agreement=<y>`.
"""

import argparse
import json
import time
from pathlib import Path

from ownwords.data.verify import grade, last_boxed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    data = Path(parser.parse_args().data)
    math500 = [json.loads(line) for line in (data / "math500.jsonl").read_text().splitlines()]
    misses = [r for r in math500 if not grade(r["solution"], r["answer"])]
    for r in misses:
        print(
            f"MATH500 disagreement {r['unique_id']}: gold {r['answer']!r} vs boxed {last_boxed(r['solution'])!r}"
        )
    gsm8k = [json.loads(line) for line in (data / "gsm8k_test.jsonl").read_text().splitlines()]
    gsm_ok = 0
    for r in gsm8k:
        value = int(r["answer"].rsplit("####", 1)[1].strip().replace(",", ""))
        gsm_ok += grade(f"The total is \\boxed{{{value:,}}}.", r["answer"], "number") is True
    print(f"MATH500: {len(math500) - len(misses)}/{len(math500)}   GSM8K: {gsm_ok}/{len(gsm8k)}")
    # Bounded checking: the slowest of several 1 MB hostile responses (unbalanced boxes), all kinds.
    worst = 0.0
    for filler in ("\\boxed{", "\\fbox{", "{" * 7, "\\boxed \\boxed{", "\\boxed{x}{"):
        text = "\\boxed{7} " + filler * (1_000_000 // len(filler))
        start = time.perf_counter()
        for kind in ("math", "integer", "number", "choice"):
            grade(text, "7" if kind != "choice" else "A", kind)
        worst = max(worst, time.perf_counter() - start)
    print(
        f"math500_agreement={1 - len(misses) / len(math500):.4f} gsm8k_agreement={gsm_ok / len(gsm8k):.4f} "
        f"grade_1mb_seconds={worst:.2f}"
    )


if __name__ == "__main__":
    main()
