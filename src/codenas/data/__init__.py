"""Data stage: HumanEval and MBPP converters, proofs, decontamination, merge/split and manifest."""
