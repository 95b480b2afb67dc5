"""HTTP serving for londonlm models: a FastAPI app with JSON and server-sent-events generation,
OpenAI-compatible endpoints (:mod:`.openai_api`), dynamic batching of concurrent requests
(:mod:`.batching`), a health endpoint, and a self-contained browser playground (``static/``)."""
from .app import ServerLimits, create_app

__all__ = ["ServerLimits", "create_app"]
