"""Jobs built on training runs: the learning-rate finder (:mod:`.lr_finder`), the hyperparameter
grid (:mod:`.grid`) and runs compared side by side (:mod:`.compare`). This file imports nothing."""
