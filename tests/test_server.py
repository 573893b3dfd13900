"""``wanrt serve`` over HTTP and WebSocket with the runner's fake nodes: ComfyUI's routes and
shapes, one worker running prompts in order with the runner's cache, progress / interrupt /
failure events, files and user data, and bad input (4xx with a ComfyUI-shaped body, nothing
read or written outside the server's folders, the server keeps serving)."""

import json
import os
import pathlib
import threading
import time
import uuid

import pytest
import requests
from runner_fakes import CALLS, FAKE_NODES, Sample, headless_host
from websockets.sync.client import connect

from wanrt.server.app import PromptServer, frontend_dir, running

MAX_BODY = 64 * 1024  # the fixture server's request body limit
WAIT = 60  # seconds a test waits for the worker before giving up (never reached when it works)


@pytest.fixture(autouse=True)
def _fresh():
    CALLS.clear()
    yield
    Sample.on_step = None


def make_server(tmp_path) -> PromptServer:
    return PromptServer(headless_host(tmp_path), user_dir=tmp_path / "user", node_classes=FAKE_NODES,
                        display_names={"Sample": "Fake Sampler"}, max_body=MAX_BODY)


@pytest.fixture
def url(tmp_path):
    with running(make_server(tmp_path)) as base:
        yield base


def node(class_type, **inputs):
    return {"class_type": class_type, "inputs": inputs}


def prompt(seed=1, steps=2, model="tiny.safetensors", prefix="n"):
    """LoadModel → Sample → SaveNumber: writes scale 3 + seed."""
    return {"1": node("LoadModel", model_name=model),
            "2": node("Sample", model=["1", 0], seed=seed, steps=steps, mode="add"),
            "3": node("SaveNumber", value=["2", 0], filename_prefix=prefix)}


def queue(url, body) -> str:
    answer = requests.post(f"{url}/api/prompt", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["prompt_id"]


def wait_for(value, what: str):
    """``value()`` once it is truthy (polled; gives up after WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if result := value():
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {WAIT} s")


def finished(url, prompt_id) -> dict:
    """The history entry of ``prompt_id`` once the worker has written it."""
    return wait_for(lambda: requests.get(f"{url}/history/{prompt_id}").json(), f"prompt {prompt_id}")[prompt_id]


def messages_until_done(ws, prompt_id) -> list[tuple[str, dict]]:
    """WebSocket messages up to the prompt's closing ``executing {node: None}``."""
    received = []
    while True:
        message = json.loads(ws.recv(timeout=WAIT))
        received.append((message["type"], message["data"]))
        if message["type"] == "executing" and message["data"] == {"node": None, "prompt_id": prompt_id}:
            return received


def assert_comfy_error(answer, status, error_type):
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    assert body["error"]["type"] == error_type
    return body


# --- routes and shapes ---------------------------------------------------------------------------

def test_every_route_answers_with_and_without_the_api_prefix(url):
    for route in ("/object_info", "/queue", "/history", "/jobs", "/system_stats", "/settings", "/users",
                  "/embeddings", "/extensions", "/workflow_templates", "/features", "/prompt"):
        plain, prefixed = requests.get(url + route), requests.get(url + "/api" + route)
        assert plain.status_code == prefixed.status_code == 200, route
        if route != "/system_stats":  # free memory changes between the calls
            assert plain.json() == prefixed.json(), route


def test_the_page_is_the_installed_frontend(url):
    page = requests.get(url + "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.content == pathlib.Path(frontend_dir(), "index.html").read_bytes()
    asset = next(pathlib.Path(frontend_dir(), "assets").glob("*.css"))
    assert requests.get(f"{url}/assets/{asset.name}").content == asset.read_bytes()


def test_object_info_describes_nodes_in_comfyuis_shape(url):
    info = requests.get(url + "/api/object_info").json()
    assert set(info) == set(FAKE_NODES)
    # The keys ComfyUI sends for a classic node (comfyui.md §3.5) and what the frontend requires.
    sample = info["Sample"]
    assert {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
            "description", "python_module", "category", "output_node", "output_tooltips"} <= set(sample)
    assert sample["input"]["required"]["seed"] == ["INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}]
    assert sample["input"]["required"]["mode"] == [["add", "mul"]]
    assert sample["input_order"] == {"required": ["model", "seed", "steps", "mode"]}
    assert (sample["output"], sample["output_is_list"], sample["output_name"]) == (["INT"], [False], ["INT"])
    assert (sample["name"], sample["display_name"], sample["category"]) == ("Sample", "Fake Sampler", "test")
    assert sample["output_node"] is False and info["SaveNumber"]["output_node"] is True
    assert info["Number"]["display_name"] == "Number"  # no display name: the class name
    # Combos of model files list the host's model folder.
    assert info["LoadModel"]["input"]["required"]["model_name"][0] == ["tiny.safetensors"]
    assert requests.get(url + "/api/object_info/Add").json() == {"Add": info["Add"]}
    assert requests.get(url + "/api/object_info/NoSuchNode").json() == {}


def test_system_stats_report_this_machines_memory_and_device(url):
    import torch

    stats = requests.get(url + "/api/system_stats").json()
    page = os.sysconf("SC_PAGE_SIZE")
    physical = page * os.sysconf("SC_PHYS_PAGES")
    assert abs(stats["system"]["ram_total"] - physical) < 0.05 * physical
    assert 0 < stats["system"]["ram_free"] <= stats["system"]["ram_total"]
    assert stats["system"]["pytorch_version"] == torch.__version__
    [device] = stats["devices"]
    assert device["type"] == "cpu" and device["vram_total"] == stats["system"]["ram_total"]


def test_startup_stubs_answer_what_the_frontend_expects(url):
    expected = {"/api/embeddings": [], "/api/extensions": [], "/api/i18n": {}, "/api/node_replacements": {},
                "/api/global_subgraphs": {}, "/api/users": {"storage": "server", "migrated": True},
                "/templates/index.json": [], "/api/userdata/comfy.templates.json": [],
                "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true": []}
    for route, body in expected.items():
        answer = requests.get(url + route)
        assert answer.status_code == 200 and answer.json() == body, route
    assert requests.get(url + "/user.css").text == ""
    assert requests.get(url + "/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    assert requests.get(url + "/api/jobs?status=in_progress,pending&limit=200&offset=0").json() == {
        "jobs": [], "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False}}
    folders = requests.get(url + "/internal/folder_paths").json()
    assert folders["diffusion_models"][-1].endswith("diffusion_models")


def test_workflow_templates_list_and_serve_our_example_workflows(url):
    workflows = pathlib.Path(__file__).parent.parent / "workflows"
    names = sorted(p.stem for p in workflows.glob("*.json"))
    assert names and requests.get(url + "/api/workflow_templates").json() == {"wanrt": names}
    served = requests.get(f"{url}/api/workflow_templates/wanrt/{names[0]}.json").json()
    assert served == json.loads((workflows / f"{names[0]}.json").read_text())
    thumbnail = requests.get(f"{url}/api/workflow_templates/wanrt/{names[0]}.jpg")
    assert thumbnail.headers["Content-Type"] == "image/jpeg" and thumbnail.content[:2] == b"\xff\xd8"
    for name in ("nope.json", "..%2F..%2Fpyproject.toml", f"{names[0]}.py"):
        assert_comfy_error(requests.get(f"{url}/api/workflow_templates/wanrt/{name}"), 404, "not_found")


# --- execution ------------------------------------------------------------------------------------

def test_a_prompt_streams_comfyuis_events_to_its_client_and_lands_in_history(url, tmp_path):
    with connect(url.replace("http", "ws") + "/ws?clientId=tab1") as ws:
        hello = json.loads(ws.recv(timeout=WAIT))
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "tab1"}}
        ws.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        flags = json.loads(ws.recv(timeout=WAIT))
        assert flags["type"] == "feature_flags" and flags["data"]["max_upload_size"] == MAX_BODY

        prompt_id = queue(url, {"prompt": prompt(seed=4, steps=3), "client_id": "tab1"})
        received = messages_until_done(ws, prompt_id)

    kinds = [kind for kind, _ in received if kind != "progress_state"]
    assert kinds == ["status", "execution_start", "execution_cached",
                     "executing", "executing", "progress", "progress", "progress", "executing", "executed",
                     "execution_success", "status", "executing"]
    assert [data["node"] for kind, data in received if kind == "executing"] == ["1", "2", "3", None]
    assert [(d["value"], d["max"], d["node"]) for k, d in received if k == "progress"] == \
        [(1, 3, "2"), (2, 3, "2"), (3, 3, "2")]
    ui = {"text": ["7"], "files": [{"filename": "n_00001_.txt", "subfolder": "", "type": "output"}]}
    assert [d for k, d in received if k == "executed"] == [
        {"node": "3", "display_node": "3", "output": ui, "prompt_id": prompt_id}]
    assert [d["status"]["exec_info"]["queue_remaining"] for k, d in received if k == "status"] == [1, 0]
    # progress_state names the running node, as the frontend's node highlight expects
    states = [d["nodes"] for k, d in received if k == "progress_state"]
    assert states[0]["1"]["state"] == "running" and states[-1]["3"]["state"] == "finished"

    entry = finished(url, prompt_id)
    assert entry["outputs"] == {"3": ui}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    number, item_id, item_prompt, extra, outputs = entry["prompt"]
    assert (item_id, item_prompt, outputs) == (prompt_id, prompt(seed=4, steps=3), ["3"])
    assert (tmp_path / "output" / "n_00001_.txt").read_text() == "7"
    [job] = requests.get(url + "/api/jobs").json()["jobs"]
    assert job["id"] == prompt_id and job["status"] == "completed" and job["outputs_count"] == 1


def test_prompts_run_in_queue_order_and_a_new_seed_does_not_reload_the_model(url):
    release, started = threading.Event(), threading.Event()

    def hold_first_run():
        started.set()
        assert release.wait(WAIT)

    Sample.on_step = hold_first_run
    first = queue(url, {"prompt": prompt(seed=1, steps=1)})
    assert started.wait(WAIT)
    Sample.on_step = None
    second = queue(url, {"prompt": prompt(seed=2, steps=1, prefix="second")})
    urgent = queue(url, {"prompt": prompt(seed=3, steps=1, prefix="urgent"), "front": True})
    waiting = requests.get(url + "/api/queue").json()
    assert [item[1] for item in waiting["queue_running"]] == [first]
    assert [item[1] for item in waiting["queue_pending"]] == [urgent, second]
    jobs = requests.get(url + "/api/jobs?status=in_progress,pending").json()["jobs"]
    assert {(job["id"], job["status"]) for job in jobs} == {(first, "in_progress"), (urgent, "pending"),
                                                           (second, "pending")}
    release.set()

    entries = [finished(url, p) for p in (first, second, urgent)]
    assert [e["outputs"]["3"]["text"] for e in entries] == [["4"], ["5"], ["6"]]
    starts = {e["prompt"][1]: e["status"]["messages"][0][1]["timestamp"] for e in entries}
    assert starts[first] <= starts[urgent] <= starts[second]
    assert list(requests.get(url + "/api/history").json()) == [first, urgent, second]
    # One model load for three prompts: the worker's Executor keeps its cache between prompts.
    assert CALLS["LoadModel"] == 1 and CALLS["Sample"] == 3
    assert [m[1]["nodes"] for e in entries for m in e["status"]["messages"] if m[0] == "execution_cached"] == \
        [[], ["1"], ["1"]]


def test_free_drops_the_cached_models(url):
    finished(url, queue(url, {"prompt": prompt(seed=1)}))
    assert requests.post(url + "/api/free", json={"unload_models": True}).status_code == 200
    finished(url, queue(url, {"prompt": prompt(seed=1)}))
    assert CALLS["LoadModel"] == 2


def test_interrupt_stops_the_running_prompt_within_one_step(url):
    reached = {3: threading.Event(), 4: threading.Event()}
    go = {3: threading.Event(), 4: threading.Event()}
    steps = []

    def step():
        steps.append(1)
        if len(steps) in reached:
            reached[len(steps)].set()
            assert go[len(steps)].wait(WAIT)

    Sample.on_step = step
    with connect(url.replace("http", "ws") + "/ws?clientId=tab2") as ws:
        ws.recv(timeout=WAIT)
        prompt_id = queue(url, {"prompt": prompt(steps=50), "client_id": "tab2"})
        assert reached[3].wait(WAIT)
        requests.post(url + "/api/interrupt", json={"prompt_id": str(uuid.uuid4())})  # another prompt: ignored
        go[3].set()
        assert reached[4].wait(WAIT)
        assert requests.post(url + "/api/interrupt", json={"prompt_id": prompt_id}).status_code == 200
        go[4].set()
        received = messages_until_done(ws, prompt_id)

    assert len(steps) == 4  # the step in progress finished; no further step started
    [interrupted] = [d for k, d in received if k == "execution_interrupted"]
    assert (interrupted["prompt_id"], interrupted["node_id"], interrupted["node_type"]) == (prompt_id, "2", "Sample")
    entry = finished(url, prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    [job] = requests.get(url + "/api/jobs?status=cancelled").json()["jobs"]
    assert job["id"] == prompt_id
    # the worker goes on with the next prompt
    assert finished(url, queue(url, {"prompt": prompt(seed=2, steps=1)}))["status"]["status_str"] == "success"


def test_a_failing_prompt_reports_execution_error_and_the_server_keeps_serving(url):
    failing = {"1": node("Number", value=9), "2": node("Fail", value=["1", 0]),
               "3": node("SaveNumber", value=["2", 0], filename_prefix="never")}
    with connect(url.replace("http", "ws") + "/ws?clientId=tab3") as ws:
        ws.recv(timeout=WAIT)
        prompt_id = queue(url, {"prompt": failing, "client_id": "tab3"})
        received = messages_until_done(ws, prompt_id)
    [failure] = [d for k, d in received if k == "execution_error"]
    assert (failure["node_id"], failure["node_type"]) == ("2", "Fail")
    assert failure["exception_message"] == "fake failure on 9" and failure["exception_type"] == "builtins.RuntimeError"
    entry = finished(url, prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
    [job] = requests.get(url + "/api/jobs?status=failed").json()["jobs"]
    assert job["execution_error"]["exception_message"] == "fake failure on 9"
    assert finished(url, queue(url, {"prompt": prompt()}))["status"]["status_str"] == "success"


def test_queue_and_history_can_be_cleared(url):
    release = threading.Event()
    Sample.on_step = lambda: release.wait(WAIT)
    running_id = queue(url, {"prompt": prompt(seed=1)})
    wait_for(lambda: requests.get(url + "/api/queue").json()["queue_running"], "the first prompt starting")
    pending = [queue(url, {"prompt": prompt(seed=s)}) for s in (2, 3, 4)]
    requests.post(url + "/api/queue", json={"delete": [pending[0]]})
    assert [i[1] for i in requests.get(url + "/api/queue").json()["queue_pending"]] == pending[1:]
    requests.post(url + "/api/jobs/cancel", json={"job_ids": [pending[1]]})
    requests.post(url + "/api/queue", json={"clear": True})
    assert requests.get(url + "/api/queue").json()["queue_pending"] == []
    release.set()
    finished(url, running_id)
    requests.post(url + "/api/history", json={"delete": [running_id]})
    assert requests.get(url + "/api/history").json() == {}


# --- files and user data ----------------------------------------------------------------------------

def test_view_serves_output_input_and_temp_files(url, tmp_path):
    for folder in ("output", "input", "temp"):
        (tmp_path / folder / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "sub" / "clip.mp4").write_bytes(folder.encode())
        answer = requests.get(url + "/api/view", params={"filename": "clip.mp4", "subfolder": "sub", "type": folder})
        assert answer.status_code == 200 and answer.content == folder.encode()
        assert answer.headers["Content-Type"] == "video/mp4"
    annotated = requests.get(url + "/view", params={"filename": "clip.mp4 [temp]", "subfolder": "sub"})
    assert annotated.content == b"temp"
    assert_comfy_error(requests.get(url + "/api/view", params={"filename": "missing.mp4"}), 404, "not_found")


def test_upload_image_then_view_it(url, tmp_path):
    def upload(content, **fields):
        return requests.post(url + "/api/upload/image", files={"image": ("start.png", content, "image/png")},
                             data=fields)

    assert upload(b"one", subfolder="mine").json() == {"name": "start.png", "subfolder": "mine", "type": "input"}
    assert (tmp_path / "input" / "mine" / "start.png").read_bytes() == b"one"
    assert upload(b"one", subfolder="mine").json()["name"] == "start.png"  # same content: same file
    assert upload(b"two", subfolder="mine").json()["name"] == "start (1).png"  # never overwrites another
    assert upload(b"three", subfolder="mine", overwrite="true").json()["name"] == "start.png"
    view = requests.get(url + "/api/view", params={"filename": "start.png", "subfolder": "mine", "type": "input"})
    assert view.content == b"three"
    assert upload(b"t", type="temp").json() == {"name": "start.png", "subfolder": "", "type": "temp"}
    assert (tmp_path / "temp" / "start.png").read_bytes() == b"t"


def test_settings_and_saved_workflows_survive_a_restart(tmp_path):
    workflow = {"nodes": [], "links": [], "version": 0.4}
    with running(make_server(tmp_path)) as url:
        assert requests.post(url + "/api/settings/Comfy.TutorialCompleted", json=True).status_code == 200
        assert requests.post(url + "/api/settings", json={"Comfy.Locale": "en"}).status_code == 200
        saved = requests.post(url + "/api/userdata/workflows%2Fmine.json?overwrite=true&full_info=true",
                              data=json.dumps(workflow))
        assert saved.json()["path"] == "workflows/mine.json" and saved.json()["size"] > 0
        again = requests.post(url + "/api/userdata/workflows%2Fmine.json?overwrite=false", data="{}")
        assert_comfy_error(again, 409, "conflict")
    with running(make_server(tmp_path)) as url:
        assert requests.get(url + "/api/settings").json() == {"Comfy.TutorialCompleted": True, "Comfy.Locale": "en"}
        assert requests.get(url + "/api/settings/Comfy.Locale").json() == "en"
        listed = requests.get(url + "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true").json()
        assert [f["path"] for f in listed] == ["mine.json"]
        assert requests.get(url + "/api/userdata/workflows%2Fmine.json").json() == workflow
        moved = requests.post(url + "/api/userdata/workflows%2Fmine.json/move/workflows%2Fdone%2Fmine.json")
        assert moved.json() == "workflows/done/mine.json"
        assert requests.get(url + "/api/userdata?dir=workflows&recurse=true").json() == ["done/mine.json"]
        assert requests.delete(url + "/api/userdata/workflows%2Fdone%2Fmine.json").status_code == 204
        assert_comfy_error(requests.get(url + "/api/userdata/workflows%2Fdone%2Fmine.json"), 404, "not_found")


# --- bad input --------------------------------------------------------------------------------------

def test_malformed_and_incomplete_prompt_requests_get_comfyui_errors(url):
    assert_comfy_error(requests.post(url + "/api/prompt", data="{not json"), 400, "invalid_json")
    assert_comfy_error(requests.post(url + "/api/prompt", json=[1, 2]), 400, "invalid_prompt")
    assert_comfy_error(requests.post(url + "/api/prompt", json={"client_id": "x"}), 400, "no_prompt")
    assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": "text"}), 400, "invalid_prompt")
    assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": {"1": {"inputs": {}}}}), 400,
                       "invalid_prompt")
    assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": {"1": node("Number", value=1)}}), 400,
                       "prompt_no_outputs")
    assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": prompt(), "prompt_id": "ABC"}), 400,
                       "invalid_prompt_id")
    assert_comfy_error(requests.post(url + "/api/settings", data="]"), 400, "invalid_json")
    assert requests.get(url + "/api/queue").json() == {"queue_running": [], "queue_pending": []}


def test_a_body_over_the_limit_is_refused_with_413(url):
    answer = requests.post(url + "/api/prompt", data=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
    body = assert_comfy_error(answer, 413, "request_too_large")
    assert str(MAX_BODY) in body["error"]["details"]
    upload = requests.post(url + "/api/upload/image", files={"image": ("big.png", b"x" * (MAX_BODY + 1))})
    assert_comfy_error(upload, 413, "request_too_large")
    assert requests.get(url + "/api/queue").status_code == 200


def test_unknown_node_types_are_named_in_the_error(url):
    body = assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": {
        **prompt(), "9": {"class_type": "KSampler", "inputs": {}, "_meta": {"title": "My Sampler"}}}}),
        400, "missing_node_type")
    assert body["error"]["extra_info"] == {"node_id": "9", "class_type": "KSampler", "node_title": "My Sampler"}


def test_a_missing_model_and_bad_values_name_the_nodes_to_highlight(url):
    body = assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": prompt(model="absent.safetensors")}),
                              400, "prompt_outputs_failed_validation")
    [problem] = body["node_errors"]["1"]["errors"]
    assert body["node_errors"]["1"]["class_type"] == "LoadModel" and body["node_errors"]["1"]["dependent_outputs"] == ["3"]
    assert problem["type"] == "custom_validation_failed" and "absent.safetensors" in problem["details"]
    too_many = prompt(steps=1000)
    body = assert_comfy_error(requests.post(url + "/api/prompt", json={"prompt": too_many}), 400,
                              "prompt_outputs_failed_validation")
    assert body["node_errors"]["2"]["errors"][0]["type"] == "value_bigger_than_max"
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "steps"


def test_no_path_reaches_outside_the_servers_folders(url, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (tmp_path / "output").mkdir(exist_ok=True)
    (tmp_path / "output" / "link.txt").symlink_to(secret)
    for params in ({"filename": "../secret.txt"}, {"filename": "secret.txt", "subfolder": ".."},
                   {"filename": "secret.txt", "subfolder": str(tmp_path)}, {"filename": "link.txt"},
                   {"filename": "../../secret.txt [input]"}, {"filename": "/etc/passwd"}):
        answer = requests.get(url + "/api/view", params=params)
        assert answer.status_code == 403 and "top secret" not in answer.text, params
    assert_comfy_error(requests.get(url + "/api/view", params={"filename": "x", "type": "models"}), 400, "bad_request")
    assert_comfy_error(requests.get(url + "/api/userdata/..%2F..%2Fsecret.txt"), 403, "forbidden")

    before = sorted(str(p) for p in tmp_path.parent.rglob("*"))
    for name, subfolder in (("../evil.png", ""), ("evil.png", "../.."), ("evil.png", "/tmp"), ("..", "")):
        answer = requests.post(url + "/api/upload/image", files={"image": (name, b"evil")}, data={"subfolder": subfolder})
        assert_comfy_error(answer, 400, "bad_request")
    for path in ("..%2F..%2Fevil.json", "%2Ftmp%2Fevil.json"):
        assert_comfy_error(requests.post(f"{url}/api/userdata/{path}", data="{}"), 403, "forbidden")
    assert_comfy_error(requests.post(url + "/api/userdata/workflows%2Fa.json/move/..%2F..%2F..%2Fevil.json"),
                       403, "forbidden")
    assert sorted(str(p) for p in tmp_path.parent.rglob("*")) == before  # nothing written anywhere
    assert requests.get(url + "/api/queue").status_code == 200


def test_requests_from_another_sites_page_are_refused(url):
    answer = requests.post(url + "/api/prompt", json={"prompt": prompt()}, headers={"Origin": "http://evil.example"})
    assert_comfy_error(answer, 403, "forbidden")
    assert requests.get(url + "/api/queue").json() == {"queue_running": [], "queue_pending": []}
    same_site = requests.post(url + "/api/settings", json={}, headers={"Origin": url})
    assert same_site.status_code == 200
