"""The stages of the loop: generate, select, export, train, evaluate, analyze. Siblings: none imports another."""
