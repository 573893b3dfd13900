"""The official ComfyUI frontend, served by ``wanrt serve``, in a real headless Chromium (Debian's
``chromium`` driven by Playwright; no browser is downloaded).

Like a user: open the page, pick our text-to-video example in the template browser, shrink it so
it runs in seconds on make-tiny models, press Run, see the video. Every request the page makes to
the server must succeed; requests to other hosts (the frontend asks comfy.org for release notes)
are blocked. A screenshot is kept in ``$WANRT_ARTIFACTS_DIR`` (default: the test's tmp folder).
"""

import json
import os
import pathlib
import shutil

import pytest
import requests


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WORKFLOW = "wan2.1_t2v_1.3B"
# Widget values that make the example tiny: no torch.compile, 64x64, 5 frames, 2 steps.
SMALL = {"WanRTCompile": {"mode": "off"},
         "WanRTEmptyLatentVideo": {"width": 64, "height": 64, "length": 5},
         "WanRTSampler": {"steps": 2}}
TIMEOUT_MS = 120_000


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("Debian's chromium is not installed; the browser test needs it: "
                    "apt-get update && apt-get install -y chromium")
    return path


def test_the_frontend_runs_an_example_workflow_and_shows_its_video(served, tmp_path):
    from playwright.sync_api import sync_playwright

    url, output_dir = served
    answers, blocked, frames = [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else (blocked.append(route.request.url), route.abort()))
            page.on("response", lambda response: answers.append((response.status, response.request.method,
                                                                 response.url)))
            page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(json.loads(frame))))
            page.goto(url)
            page.wait_for_function("() => window.LiteGraph?.registered_node_types?.WanRTSampler !== undefined",
                                   timeout=TIMEOUT_MS)

            # A first visit opens the template browser, which lists our workflows/.
            page.get_by_text(WORKFLOW, exact=True).click(timeout=TIMEOUT_MS)
            page.wait_for_function("() => app.graph.nodes.some(n => n.type === 'WanRTSaveVideo')",
                                   timeout=TIMEOUT_MS)
            page.evaluate("""(small) => {
                for (const node of app.graph.nodes)
                    for (const [name, value] of Object.entries(small[node.type] ?? {}))
                        node.widgets.find(w => w.name === name).value = value
            }""", SMALL)
            page.get_by_role("button", name="Run", exact=True).click()

            page.wait_for_function("() => document.querySelector('video[src*=\"/api/view?\"]') !== null",
                                   timeout=TIMEOUT_MS)
            src = page.evaluate("() => document.querySelector('video[src*=\"/api/view?\"]').src")
            page.wait_for_timeout(500)  # let the video's first frame paint for the screenshot
            shot = pathlib.Path(os.environ.get("WANRT_ARTIFACTS_DIR") or tmp_path) / "wanrt_serve_browser.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")

            # A model file that is not there: the server's validation error marks the loader node.
            answers_before_error = len(answers)
            page.evaluate("""() => app.graph.nodes.find(n => n.type === 'WanRTLoadDiffusionModel')
                .widgets.find(w => w.name === 'model_name').value = 'not_downloaded.safetensors'""")
            page.get_by_role("button", name="Run", exact=True).click()
            page.wait_for_function("() => app.lastNodeErrors !== null", timeout=TIMEOUT_MS)
            node_errors = page.evaluate("() => app.lastNodeErrors")
        finally:
            browser.close()

    [executed] = [f["data"] for f in frames if f["type"] == "executed" and f["data"]["output"].get("images")]
    [video] = executed["output"]["images"]
    assert video["filename"].endswith(".mp4") and video["type"] == "output"
    assert f"filename={video['filename']}" in src and f"subfolder={video['subfolder']}" in src
    body = requests.get(src, timeout=30).content
    assert body[4:8] == b"ftyp"  # an MP4 container
    assert body == (output_dir / video["subfolder"] / video["filename"]).read_bytes()

    types = [f["type"] for f in frames]
    assert types[0] == "status" and frames[0]["data"]["sid"]
    assert {"feature_flags", "execution_start", "executing", "progress", "progress_state",
            "execution_success"} <= set(types)
    progress = [(f["data"]["node"], f["data"]["value"], f["data"]["max"]) for f in frames if f["type"] == "progress"]
    assert progress == [("7", 1, 2), ("7", 2, 2),  # the sampler's two steps reached the page,
                        ("8", 1, 2), ("8", 2, 2)]  # then VAE decode's two latent frames

    [loader_error] = node_errors["1"]["errors"]
    assert loader_error["type"] == "custom_validation_failed" and "not_downloaded" in loader_error["details"]
    failed = [a for a in answers[:answers_before_error] if a[0] >= 400]
    assert not failed, f"the page got errors from the server: {failed}"
    assert (400, "POST", f"{url}/api/prompt") in answers[answers_before_error:]
    assert {"/api/object_info", "/api/prompt", "/api/workflow_templates", "/api/system_stats"} <= \
        {a[2][len(url):].split("?")[0] for a in answers}
    assert all(not b.startswith(url) for b in blocked)
