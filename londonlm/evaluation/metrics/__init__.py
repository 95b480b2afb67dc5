"""The evaluation's measures of a loaded model, one module each: held-out loss, perplexity and
bits per byte (:mod:`.lm`), multiple-choice probes (:mod:`.probes`), continuation quality
(:mod:`.generation_quality`) and the leakage probes with their statistics (:mod:`.leakage`).

Kept free of imports: the stage's run and the package's exports import the modules
themselves."""
