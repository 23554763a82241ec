"""The RSD math (distributions, acceptance rules, closed form, speculative verify) and vocabulary alignment: torch only."""
