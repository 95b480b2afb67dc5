"""One training step: the Trainer subclass that takes it (:mod:`.trainer`: its optimizer and
learning-rate schedule as methods), the optimizers (:mod:`.optim`), the schedules (:mod:`.schedules`),
the fused LM-head loss (:mod:`.fused_loss`), what runs after each step (:mod:`.callbacks`) and
the profiler window (:mod:`.profiling`). Import the modules themselves: this file imports nothing,
so a module of this package never drags in the others."""
