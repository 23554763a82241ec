"""Grading is linear in the response: the time to grade 1 MB of hostile text against 100 kB of it.

    python benchmarks/bench_verify.py   # last line: verify_linearity=... (10 for linear, 100 for quadratic)
"""

from __future__ import annotations

import time

from ownwords.data.verify import grade

FILLERS = ["\\boxed{", "\\fbox{", "\\boxed{x}{", "{" * 7, "\\boxed \\boxed{"]


def seconds(size: int) -> float:
    start = time.perf_counter()
    for filler in FILLERS:
        text = "\\boxed{7} " + filler * (size // len(filler))
        for kind in ("math", "integer", "number"):
            grade(text, "7", kind)
    return time.perf_counter() - start


def main() -> None:
    seconds(10_000)  # warm-up: imports, math-verify's first parse
    small, big = min(seconds(100_000) for _ in range(3)), min(seconds(1_000_000) for _ in range(3))
    print(f"100 kB: {small:.3f} s   1 MB: {big:.3f} s   (best of 3, {len(FILLERS)} fillers x 3 answer kinds)")
    print(f"verify_linearity={big / small:.1f}")


if __name__ == "__main__":
    main()
