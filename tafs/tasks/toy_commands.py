"""The toy task's own DAG stages (``python -m tafs pretrain`` / ``train-scorer``): they build the toy base and
the learned toy CLIP-like scorer. Imported only when one of them runs."""

from __future__ import annotations


def pretrain(argv: list[str]) -> object:
    from tafs.toyworld.pretrain import main

    return main(argv)


def train_scorer(argv: list[str]) -> object:
    from tafs.toyworld.scorer import main

    return main(argv)


COMMANDS = {
    "pretrain": (pretrain, "rectified-flow pretraining of the toy base model (toy tasks)"),
    "train-scorer": (train_scorer, "train the toy CLIP-like scorer, a learned reward (toy tasks)"),
}
