"""The step-by-step policy's real-traffic evidence: the labelled ShareGPT set, training, evaluation."""
