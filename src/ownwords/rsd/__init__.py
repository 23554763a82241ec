"""The RSD math (distributions, acceptance rules, closed form, speculative verify) and vocabulary alignment: torch only.

The names of the rules and log-probability readings are here, apart from the math, so that configs
can check them without importing torch."""

RULES = ("threshold", "rank", "nucleus", "ratio", "percentile")
LOGPROBS = ("none", "raw", "processed")
