"""londonlm: historical London (1500-1900) GPT-2 language models.

The library holds all logic; the numbered stage scripts parse arguments and call it.
It never imports the root ``config.py``: every function takes explicit arguments.
"""

__version__ = "0.1.0"
