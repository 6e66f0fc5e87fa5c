"""How the classifier's quality grows with its training turns (about 2 minutes):

    .venv/bin/python -m policy.learning_curve [--c 3.0]

`policy/train.py`'s 5-fold cross-validation, with each fold trained on a seeded share of its
turns. Where the figures climb slowly (a few hundredths of average precision per doubling),
more labels of the same kind will not carry the classifier to a much higher precision and
recall; see docs/step-by-step-policy.md.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from policy.train import DevelopmentSide, best_threshold

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
PRECISION_FLOOR = 0.90


def recall_at_precision(probabilities: np.ndarray, labels: np.ndarray, floor: float) -> float:
    """The best recall any threshold keeps while precision stays at or above `floor`."""
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    return float(recall[precision >= floor].max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--c", type=float, default=3.0, help="regularization (train's choice)")
    args = parser.parse_args()
    side = DevelopmentSide.load()
    print(
        f"| share of training turns | training turns per fold | average precision | recall at precision "
        f"{PRECISION_FLOOR} | best F1 (precision, recall) |\n| ---: | ---: | ---: | ---: | --- |"
    )
    for fraction in FRACTIONS:
        scores = side.cross_scores(args.c, fraction)
        _, precision, recall, f1 = best_threshold(scores, side.dev_labels)
        per_fold = np.mean([len(t) + len(k) for t, k, _ in side.training_folds(fraction)])
        print(
            f"| {fraction:.3f} | {per_fold:.0f} | "
            f"{average_precision_score(side.dev_labels, scores):.3f} | "
            f"{recall_at_precision(scores, side.dev_labels, PRECISION_FLOOR):.3f} | "
            f"{f1:.3f} ({precision:.3f}, {recall:.3f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
