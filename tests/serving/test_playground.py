"""The browser playground in headless Chromium, driven over the DevTools protocol
(``websocket-client``), at desktop and phone widths: text generation, and the chat mode for a
chat model (streamed answers from /v1/chat/completions, history, the year of the system line).
Skips, naming why, without a browser."""
from __future__ import annotations

import json
import shutil
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
    assert page.js("$('modes').hidden") is True and page.js("$('chat').hidden") is True  # not a chat model
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


# --------------------------------------------------------------------------- chat mode

@pytest.fixture(scope="module")
def chat_server(chat_model_dir):
    lm = load_model(str(chat_model_dir), device="cpu")
    lm.model.register_forward_pre_hook(lambda module, args: time.sleep(0.02))  # observable streaming
    with running(create_app(lm=lm, max_prompt_chars=500, max_new_tokens_limit=64)) as url:
        yield url


def ask_in_page(page: Page, question: str, year: int, seed: int, max_tokens: int) -> dict:
    page.js("""(() => {
        window.__lengths = [];
        new MutationObserver(() => {
            const last = document.querySelector("#messages li.assistant:last-child .text");
            if (last) window.__lengths.push(last.textContent.length);
        }).observe($("messages"), {childList: true, characterData: true, subtree: true});
    })()""")
    page.js(f"""(() => {{
        $("question").value = {json.dumps(question)};
        $("year").value = "{year}"; $("year").dispatchEvent(new Event("input"));
        $("chat-seed").value = "{seed}";
        $("chat-max").value = {max_tokens}; $("chat-max").dispatchEvent(new Event("input"));
        $("send").click();
    }})()""")
    page.wait("$('send').disabled === false && $('status').textContent !== 'answering…'")
    return page.js("""({status: $("status").textContent, system: $("system-line").textContent,
                        lengths: window.__lengths,
                        messages: [...document.querySelectorAll("#messages li")].map(li => ({
                            role: li.classList.contains("user") ? "user" : "assistant",
                            text: li.querySelector(".text").textContent}))})""")


def api_chat(base: str, messages: list[dict], year: int, seed: int, max_tokens: int) -> str:
    body = {"model": httpx.get(f"{base}/health", timeout=30).json()["model"], "messages": messages,
            "year": year, "seed": seed, "max_tokens": max_tokens, "temperature": 0.8}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_chat_mode_streams_answers_and_keeps_the_conversation(page, chat_server):
    page.open(chat_server, 1280, 800, mobile=False)
    assert page.js("$('modes').hidden") is False and page.js("$('chat').hidden") is False
    assert page.js("$('form').hidden") is True          # a chat model opens in chat mode
    first = ask_in_page(page, "Where do you live?", year=1790, seed=5, max_tokens=24)
    assert first["system"] == "Old Bailey, London, 1790." and "answered in" in first["status"]
    assert "Old Bailey, London, 1790." in first["status"]
    q1 = {"role": "user", "content": "Where do you live?"}
    a1 = api_chat(chat_server, [q1], 1790, 5, 24)
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert first["messages"][1]["text"] == (a1 or "(no answer)")
    grew = sorted(set(first["lengths"]))
    if a1:
        assert len([n for n in grew if 0 < n < len(a1)]) >= 1, f"the answer arrived in one piece: {grew}"
    # the second question goes with the first exchange, under the year now asked
    second = ask_in_page(page, "What did you see?", year=1818, seed=6, max_tokens=16)
    history = [q1, {"role": "assistant", "content": a1}] if a1 else []
    a2 = api_chat(chat_server, [*history, {"role": "user", "content": "What did you see?"}], 1818, 6, 16)
    assert len(second["messages"]) == 4 and second["messages"][3]["text"] == (a2 or "(no answer)")
    page.js("$('reset').click()")
    assert page.js("$('messages').children.length") == 0 and page.js("$('status').textContent") == "new conversation"
    # the text mode is still there for the same model
    page.js("$('mode-text').click()")
    assert page.js("$('form').hidden") is False and page.js("$('chat').hidden") is True
    page.js("$('mode-chat').click()")


def test_chat_mode_shows_refusals_and_fits_a_phone(page, chat_server):
    page.open(chat_server, 375, 740, mobile=True)
    # a year outside the Proceedings never leaves the page (the field's own range check)
    page.js("$('year').value = '1500'; $('send').click()")
    assert page.js("$('year').checkValidity()") is False and page.js("$('messages').children.length") == 0
    out = ask_in_page(page, "x" * 600, year=1818, seed=1, max_tokens=8)      # the server refuses it
    assert out["status"].startswith("error 400") and "at most 500" in out["status"], out["status"]
    assert page.js("$('status').className") == "error"
    assert out["messages"][-1]["text"] == "(no answer)"
    layout = page.js("""(() => ({scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                                 send: $("send").getBoundingClientRect().right,
                                 year: $("year").parentElement.getBoundingClientRect().left,
                                 temp: $("chat-temperature").parentElement.getBoundingClientRect().left}))()""")
    assert layout["scroll"] <= layout["width"] == 375 and layout["send"] <= 375
    assert abs(layout["year"] - layout["temp"]) < 1, "chat settings should stack in one column"
    # the refused question left no trace in the conversation sent next time
    ok = ask_in_page(page, "Who are you?", year=1756, seed=2, max_tokens=8)
    assert "answered in" in ok["status"], ok["status"]
