"""The browser playground in headless Chromium, driven over the DevTools protocol
(``websocket-client``), at desktop and phone widths. Skips, naming why, without a browser."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import serving_in_thread
from londonlm.generation import load_model
from londonlm.serving import create_app

pytestmark = pytest.mark.network_local
BROWSER = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


running = serving_in_thread


class Page:
    """The few DevTools calls the test needs: evaluate JavaScript, poll, emulate a viewport."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # skip events until our answer arrives
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"JavaScript failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.05)
        status = self.js("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression}; page status: {status}")

    def open(self, url: str, width: int, height: int, mobile: bool):
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=2 if mobile else 1, mobile=mobile)
        self.send("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && "
                  "document.getElementById('model-info').textContent.includes('parameters')")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if BROWSER is None:
        pytest.skip("no headless browser found (`which chromium chromium-browser` is empty); "
                    "install Debian's chromium, e.g. `bash .ci/install_browser.sh`")
    try:
        import websocket
    except ImportError:
        pytest.skip("websocket-client is not installed (pip install websocket-client)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                             "--disable-extensions", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.skip(f"{BROWSER} did not start headless (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        target = next(t for t in targets if t["type"] == "page")
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        yield Page(ws)
        ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu")
    # a little delay per token so streaming is observable, as with a real model
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.02))
    with running(create_app(lm=lm, max_prompt_chars=500, max_new_tokens_limit=64)) as url:
        yield url


def generate_in_page(page: Page, prompt: str, seed: int, max_new_tokens: int, era_index: int = 0) -> dict:
    page.js("""(() => {
        window.__lengths = [];
        new MutationObserver(() => window.__lengths.push($("out-text").textContent.length))
            .observe($("out-text"), {childList: true, characterData: true, subtree: true});
    })()""")
    page.js(f"""(() => {{
        $("prompt").value = {json.dumps(prompt)};
        $("seed").value = "{seed}";
        for (const [id, v] of [["max_new_tokens", {max_new_tokens}], ["era", {era_index}]]) {{
            $(id).value = v; $(id).dispatchEvent(new Event("input"));
        }}
        $("generate").click();
    }})()""")
    page.wait("$('generate').disabled === false && $('status').textContent !== 'generating…'")
    return page.js("""({text: $("out-text").textContent, prompt: $("out-prompt").textContent,
                        status: $("status").textContent, lengths: window.__lengths,
                        era: $("era-out").textContent})""")


def api_text(base: str, prompt: str, seed: int, max_new_tokens: int, era: str | None = None) -> str:
    body = {"prompt": prompt, "seed": seed, "max_new_tokens": max_new_tokens, "temperature": 0.8,
            "top_p": 0.95, "top_k": 50, "repetition_penalty": 1.1, **({"era": era} if era else {})}
    return httpx.post(f"{base}/v1/generate", json=body, timeout=60).json()["text"]


def test_playground_streams_generated_text_on_desktop(page, server):
    page.open(server, 1280, 800, mobile=False)
    assert page.js("$('era').max") == "3" and page.js("$('era-out').textContent") == "none"
    out = generate_in_page(page, "Up betimes, and", seed=5, max_new_tokens=40)
    assert "tokens/s" in out["status"] and out["prompt"] == "Up betimes, and"
    assert out["text"] and out["text"] == api_text(server, "Up betimes, and", 5, 40)
    grew = sorted(set(out["lengths"]))
    assert len([n for n in grew if 0 < n < len(out["text"])]) >= 1, f"text arrived in one piece: {grew}"
    page.js("$('copy').click()")
    assert "cop" in page.wait("$('status').textContent.includes('cop') && $('status').textContent")


def test_playground_on_a_phone_width_screen(page, server):
    page.open(server, 375, 740, mobile=True)
    layout = page.js("""(() => {
        const r = (id) => $(id).getBoundingClientRect();
        return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                generate: r("generate").right, temp: r("temperature").left, topp: r("top_p").left,
                prompt: r("prompt").right};
    })()""")
    assert layout["width"] == 375 and layout["scroll"] <= layout["width"], layout
    assert layout["generate"] <= 375 and layout["prompt"] <= 375
    assert abs(layout["temp"] - layout["topp"]) < 1, "sliders should stack in one column"
    out = generate_in_page(page, "London", seed=9, max_new_tokens=24, era_index=2)
    assert out["era"] == "1650s" and "tokens/s" in out["status"]
    assert out["text"] == api_text(server, "London", 9, 24, era="1650s")


def test_playground_shows_server_errors(page, server):
    page.open(server, 1280, 800, mobile=False)
    out = generate_in_page(page, "x" * 600, seed=1, max_new_tokens=8)
    assert out["status"].startswith("error 422") and "prompt" in out["status"]
    assert page.js("$('status').className") == "error"
