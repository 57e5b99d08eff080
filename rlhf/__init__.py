"""rlhf: the parts of a minimal RLHF codebase. Math and model pieces only; the scripts own their loops."""
