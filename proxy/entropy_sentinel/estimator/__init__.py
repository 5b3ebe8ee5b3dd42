"""P(correct) from decoding entropy: benchmark loaders, prompts, graders, estimators and their evaluation."""
