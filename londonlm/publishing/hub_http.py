"""How a publish talks to the Hub, bounded, and how a failed exchange is worded.

huggingface_hub's own HTTP client waits for ever for an answer, and before each retry sleeps as
long as a Retry-After (or a 429's RateLimit reset) asks, five times over: a Hub that took a
request and never answered held a publish for good, one asking for an hour held it five hours,
silently. :func:`bounded_client` gives the library, for the length of an upload, a client with
a timeout which refuses a long wait at once (the user is told to publish again after it). :func:`failure_text` turns whatever the upload raised (the Hub's refusal, a
broken connection, an answer of another shape) into the rest of a one-line error.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator
from urllib.parse import urlsplit

from .access import mask_secret

HUB_TIMEOUT_S = 120.0      # of silence on a connection (connect, read, write): ends that attempt
MAX_RETRY_WAIT_S = 60.0    # the longest wait before a retry taken; a longer one fails at once
RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)  # what huggingface_hub retries


class HubAsksToWait(Exception):
    def __init__(self, status: int, seconds: float):
        super().__init__(f"HTTP {status}: the Hub asks to wait {seconds:g} s")
        self.status, self.seconds = status, seconds


class HubLostFiles(Exception):
    """The Hub answered the commit as done, but what it holds at that commit differs from the
    staged files (read back after the upload)."""


def _requested_wait(response) -> float | None:
    """How long huggingface_hub would sleep before retrying ``response`` (None: no retry or no
    wait asked), read the way it reads it."""
    from huggingface_hub.utils import parse_ratelimit_headers

    if response.status_code not in RETRIED_STATUSES:
        return None
    if response.status_code == 429:
        info = parse_ratelimit_headers(response.headers)
        if info is not None and info.remaining == 0:
            return float(info.reset_in_seconds)
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _refuse_long_waits(response) -> None:
    wait = _requested_wait(response)
    if wait is not None and wait > MAX_RETRY_WAIT_S:
        raise HubAsksToWait(response.status_code, wait)


TOKEN_WITHHELD = "londonlm_token_withheld_by"   # a request's extension: the Hub origin it was not sent to


def _origin(url) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL (text, or the HTTP client's URL), the port filled in for
    the scheme's default: what decides whether a request goes to the Hub."""
    if isinstance(url, str):
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname or "", parts.port
    else:
        scheme, host, port = url.scheme, url.host, url.port
    return scheme.lower(), host.lower(), port or {"http": 80, "https": 443}.get(scheme.lower(), 0)


def _token_for_the_hub_only(hub_url: str):
    """A request hook that sends the token to the Hub's own origin only. httpx drops it on a
    redirect to another host, but the Hub's answers also name URLs the library then calls with
    the token: an LFS batch answer's ``verify`` href went out with ``Authorization: Bearer
    hf_...`` to whatever host it named. The request is still made, without the token."""
    hub = _origin(hub_url)
    shown = f"{hub[0]}://{hub[1]}" + ("" if hub[2] in (80, 443) else f":{hub[2]}")  # (no password)

    def hook(request) -> None:
        if "authorization" in request.headers and _origin(request.url) != hub:
            del request.headers["authorization"]
            request.extensions = {**request.extensions, TOKEN_WITHHELD: shown}
    return hook


def _bounded_client(hub_url: str | None = None):
    """huggingface_hub's client, with a timeout, long retry waits refused (a response hook
    runs before the library's retry loop sees the answer) and, given the Hub's URL, the token
    sent to that Hub only."""
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    client.timeout = HUB_TIMEOUT_S
    request_hooks = [_token_for_the_hub_only(hub_url)] if hub_url else []
    client.event_hooks = {**client.event_hooks,
                          "request": [*client.event_hooks.get("request", []), *request_hooks],
                          "response": [*client.event_hooks.get("response", []), _refuse_long_waits]}
    return client


@contextmanager
def bounded_client(hub_url: str | None = None) -> Iterator[None]:
    """huggingface_hub's shared client a bounded one inside the block, the library's own after
    it (a caller in the same process, a download, keeps its settings); a library without client
    factories (before 1.0, on requests) keeps its own throughout. ``hub_url``: the only origin
    the token is sent to."""
    try:
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http
    except ImportError:
        yield
        return
    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    # (closes the shared client: the next request makes ours)
    set_client_factory(partial(_bounded_client, hub_url))
    try:
        yield
    finally:
        set_client_factory(previous)


def end_progress_bars() -> None:
    """Close the progress bars a failed transfer left open: an open bar has no line end, and the
    error line would be printed on after it ("model.safetensors: 0%| ...]error: ...")."""
    from tqdm.std import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP libraries' connection errors (whichever huggingface_hub uses), and the socket's
    (not every OSError: a staged file that cannot be read is no network failure)."""
    import importlib
    import socket
    import ssl

    found: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError]
    for module, names in (("httpx2", ("HTTPError", "InvalidURL")), ("httpx", ("HTTPError", "InvalidURL")),
                          ("requests", ("RequestException",))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if isinstance(getattr(mod, n, None), type)]
    return tuple(found)


def _is_timeout(e: BaseException) -> bool:
    return any(c.__name__ in ("TimeoutException", "Timeout") for c in type(e).__mro__) \
        or isinstance(e, TimeoutError)


def _root_cause(e: BaseException, known: tuple[type[BaseException], ...]) -> BaseException:
    """The failure under a wrapper ("Error while uploading 'x' to the Hub." raised from it)."""
    while e.__cause__ is not None and not isinstance(e, known):
        e = e.__cause__
    return e


def _flat(text: str, limit: int = 300) -> str:
    """``text`` on one line (the Hub's own message often comes on the line after "Bad request:"),
    cut after ``limit`` characters (a hostile Hub's message can be megabytes)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def failure_text(e: BaseException, secret: str | None = None) -> str:
    """What went wrong, and what to do: the rest of a one-line error after "upload to <repo>
    failed". ``secret`` is masked before the message is cut (a cut token escapes masking)."""
    from huggingface_hub.errors import HfHubHTTPError

    transport = _transport_errors()
    e = _root_cause(e, (HubAsksToWait, HubLostFiles, HfHubHTTPError, *transport))
    first = _flat(mask_secret(str(e), secret)) or type(e).__name__
    if isinstance(e, (HubAsksToWait, HubLostFiles)):
        return _own_failure(e)
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = {401: "the token was rejected: check HF_TOKEN or run `hf auth login` again",
                403: "the token lacks write access to this namespace: use a write token or "
                     "your own username in --repo_id",
                404: "repository or branch not found: check --repo_id and --revision"}.get(status, "")
        hint = _redirected_without_token(getattr(e, "response", None)) or hint
        return f"{f' (HTTP {status})' if status else ''}: {first}{'; ' + hint if hint else ''}"
    if _is_timeout(e):
        return (f": the Hub did not answer within {HUB_TIMEOUT_S:g} s ({type(e).__name__}); check "
                f"the network and HF_ENDPOINT, then publish again")
    if isinstance(e, transport):
        return (f": the connection to the Hub failed ({type(e).__name__}: {first}); check the "
                f"network and HF_ENDPOINT, then publish again")
    if isinstance(e, (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)):
        return (f": the Hub sent an answer huggingface_hub could not read ({type(e).__name__}: "
                f"{first}); check that HF_ENDPOINT points at a Hugging Face Hub, and publish "
                f"again later (the Hub may be having trouble)")
    return f": {type(e).__name__}: {first}; check the network and HF_ENDPOINT"


def _redirected_without_token(response) -> str | None:
    """What to do when the Hub sent a request to another host: a redirect (a mirror or proxy at
    HF_ENDPOINT that sends on elsewhere), or an answer naming another host's URL for the next
    request (an LFS verify href). The token is not sent there, as it should not be, so that
    host's 401 was told as "the token was rejected: check HF_TOKEN", and the user replaced a good
    token. None when the request was not sent elsewhere so, or kept its token."""
    def origin(url) -> str:  # no user or password, no path: what the user compares with HF_ENDPOINT
        return f"{url.scheme}://{url.host}{f':{url.port}' if url.port else ''}"

    request = getattr(response, "request", None)
    withheld = getattr(request, "extensions", {}).get(TOKEN_WITHHELD)
    if withheld:
        return (f"the Hub at {withheld} named {origin(request.url)}, another host, for this request, "
                f"which is not sent the token; check that HF_ENDPOINT is the Hub's own address (the "
                f"token was not what failed)")
    history = getattr(response, "history", None) or []
    if not history or "authorization" not in history[0].request.headers \
            or "authorization" in response.request.headers:
        return None
    return (f"the Hub at {origin(history[0].request.url)} redirected the request to "
            f"{origin(response.request.url)}, another host, which is not sent the token; set HF_ENDPOINT "
            f"to the address that answers itself (the token was not what failed)")


def _own_failure(e: BaseException) -> str:
    if isinstance(e, HubAsksToWait):
        return (f" ({e}, more than the {MAX_RETRY_WAIT_S:g} s this publish waits): the Hub is "
                f"busy or rate limiting; publish again after that")
    return (f": {e}; publish again (nothing local changed), and if it happens again the Hub is "
            f"at fault")
