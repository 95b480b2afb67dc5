"""HTTP serving for londonlm models: a FastAPI app with JSON and server-sent-events generation,
OpenAI-compatible endpoints (:mod:`.openai_api`), dynamic batching of concurrent requests
(:mod:`.batching`), a health endpoint, and a self-contained browser playground (``static/``).

Its exports load on first use: the app imports torch and the model code, which the terminal
generation's command line (``inference_cli``, in this package) need not wait for to parse."""
from ..core import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {"app": ("ServerLimits", "create_app")})
