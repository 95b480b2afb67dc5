"""How fast a run trains: the one speed-settings object (:mod:`.settings`: precision, attention
kernel, LM-head loss, and what a run asks of them), the probe that times candidates on this
machine (:mod:`.probe`) with its per-user cache (:mod:`.cache`), and the choice a run trains
with (:mod:`.choice`: the settings, torch.compile's preflight, the micro-batch fitted to the GPU,
the time budget's step time). Import the modules themselves: this file imports nothing."""
