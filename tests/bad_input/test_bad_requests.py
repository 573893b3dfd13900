"""Hostile requests to ``wanrt serve`` (one server on loopback with the real nodes and tiny models):
path traversal, odd encodings, uploads, DNS rebinding, sizes and floods. Each answer is a 4xx
with a ComfyUI-shaped error (never a 500), nothing is read or written outside the server's
folders, stored files never run as pages, and the server keeps serving."""

import concurrent.futures
import json
import pathlib
import time
import urllib.parse

import pytest
import requests

import wanrt
from wanrt.nodes.host import HeadlessHost
from wanrt.server.app import ALLOW_OUTPUT_OVERWRITE, PromptServer, running

MAX_BODY = 256 * 1024
WORKFLOWS = pathlib.Path(wanrt.__file__).parent / "workflows"


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """``(url, root)``: the server's folders are root/output, input, temp, user; root/secret.txt
    is outside them."""
    root = tmp_path_factory.mktemp("server")
    (root / "secret.txt").write_text("top secret")
    for folder in ("output", "input", "temp"):
        (root / folder).mkdir()
    (root / "output" / "link.txt").symlink_to(root / "secret.txt")
    (root / "output" / "generated_00001_.mp4").write_bytes(b"a generated video")
    host = HeadlessHost.from_paths(tiny_models, output_dir=root / "output", input_dir=root / "input",
                                   temp_dir=root / "temp", show_progress=False)
    with running(PromptServer(host, user_dir=root / "user", max_body=MAX_BODY)) as url:
        yield url, root


@pytest.fixture
def url(server):
    """The server's URL; after each test it must still answer."""
    yield server[0]
    assert requests.get(server[0] + "/api/queue", timeout=30).status_code == 200


def assert_refused(answer, status, error_type=None):
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "node_errors"} and set(body["error"]) == {"type", "message", "details", "extra_info"}
    if error_type:
        assert body["error"]["type"] == error_type
    assert "top secret" not in answer.text
    return body


def files_under(root: pathlib.Path) -> list[str]:
    return sorted(str(p) for p in root.parent.rglob("*"))


# Traversal

TRAVERSALS = {
    "parent in the name": {"filename": "../secret.txt"},
    "parent as subfolder": {"filename": "secret.txt", "subfolder": ".."},
    "nested parents": {"filename": "secret.txt", "subfolder": "a/../../"},
    "absolute subfolder": {"filename": "secret.txt", "subfolder": "/"},
    "absolute name": {"filename": "/etc/passwd"},
    "a symlink out": {"filename": "link.txt"},
    "annotated parent": {"filename": "../secret.txt [input]"},
    "backslash parent": {"filename": "..\\secret.txt"},
    "parent through temp": {"filename": "../secret.txt", "type": "temp"},
}


@pytest.mark.parametrize("params", TRAVERSALS.values(), ids=TRAVERSALS.keys())
def test_view_never_reaches_outside_its_folders(url, params):
    assert_refused(requests.get(url + "/api/view", params=params), 403, "forbidden")


@pytest.mark.parametrize("path", ["..%2Fsecret.txt", "..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "..%5C..%5Csecret.txt"])
def test_userdata_never_reaches_outside_the_user_folder(url, server, path):
    before = files_under(server[1])
    assert_refused(requests.get(f"{url}/api/userdata/{path}"), 403, "forbidden")
    assert_refused(requests.post(f"{url}/api/userdata/{path}", data=b"x"), 403, "forbidden")
    assert files_under(server[1]) == before


# Odd names

NAMES = {
    "NUL": "a\0b.png",
    "newline": "a\nb.png",
    "DEL": "a\x7fb.png",
    "300 characters": "a" * 300 + ".png",
}


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_an_impossible_file_name_is_a_400_in_view_and_userdata(url, server, name):
    before = files_under(server[1])
    assert_refused(requests.get(url + "/api/view", params={"filename": name}), 400)
    assert_refused(requests.get(url + "/api/view", params={"filename": "x.png", "subfolder": name}), 400)
    assert_refused(requests.post(f"{url}/api/userdata/{urllib.parse.quote(name)}", data=b"{}"), 400)
    assert_refused(requests.get(f"{url}/api/userdata/{urllib.parse.quote(name)}"), 400)
    assert files_under(server[1]) == before


def multipart(filename: bytes) -> tuple[bytes, dict]:
    """A multipart upload whose file name is exactly these bytes (clients would escape them)."""
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + filename
            + b"\"\r\nContent-Type: image/png\r\n\r\nx\r\n--XyZ--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=XyZ"}


@pytest.mark.parametrize("filename", [b"a\x00b.png", b"a" * 300 + b".png", "\u00e9".encode() * 200, b"\xff\xfe.png",
                                      b"a\x01b.png", b"..", b"."], ids=["NUL", "300 bytes", "400 UTF-8 bytes",
                                                                      "not UTF-8", "control", "parent", "dot"])
def test_an_impossible_upload_name_is_a_400(url, server, filename):
    before = files_under(server[1])
    body, headers = multipart(filename)
    answer = requests.post(url + "/api/upload/image", data=body, headers=headers)
    assert_refused(answer, 400)
    assert files_under(server[1]) == before


def test_undecodable_percent_escapes_are_not_a_500(url):
    for path in ("/api/userdata/%ff%fe.json", "/api/view?filename=%ff%fe.png", "/api/userdata/%c0%ae%c0%ae%2fx"):
        assert requests.get(url + path).status_code in (400, 403, 404), path


# Uploads and what is served back

SERVED = {
    "html": ("page.html", b"<script>alert(document.cookie)</script>", None),
    "svg": ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', None),
    "javascript": ("code.js", b"alert(1)", None),
    "xhtml": ("page.xhtml", b"<html xmlns='http://www.w3.org/1999/xhtml'><script>alert(1)</script></html>", None),
    "no extension": ("noext", b"<script>alert(1)</script>", None),
    "png": ("picture.png", b"\x89PNG\r\n\x1a\n", "image/png"),
    "webp": ("anim.webp", b"RIFF....WEBP", "image/webp"),
    "mp4": ("video.mp4", b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
}


@pytest.mark.parametrize("name, content, inline", SERVED.values(), ids=SERVED.keys())
def test_view_serves_only_frontend_media_inline(url, name, content, inline):
    uploaded = requests.post(url + "/api/upload/image", files={"image": (name, content)}, data={"type": "input"})
    assert uploaded.status_code == 200, uploaded.text
    served = requests.get(url + "/api/view", params={"filename": uploaded.json()["name"], "type": "input"})
    assert served.status_code == 200 and served.content == content
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    if inline:
        assert served.headers["Content-Type"] == inline
        assert served.headers["Content-Disposition"].startswith("inline")
    else:
        assert served.headers["Content-Type"] == "application/octet-stream"
        assert served.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("name, inline", [("x.html", None), ("x.svg", None), ("workflows/w.json", "application/json"),
                                          ("user.css", "text/css")])
def test_userdata_serves_only_what_the_frontend_loads_inline(url, name, inline):
    assert requests.post(f"{url}/api/userdata/{urllib.parse.quote(name, safe='')}", data=b"<script>1</script>").ok
    served = requests.get(f"{url}/api/userdata/{urllib.parse.quote(name, safe='')}")
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Type"].split(";")[0] == (inline or "application/octet-stream")
    assert served.headers["Content-Disposition"].startswith("inline" if inline else "attachment")


def test_an_upload_never_replaces_a_generated_output_unless_the_setting_allows(url, server):
    video = server[1] / "output" / "generated_00001_.mp4"
    evil = {"image": ("generated_00001_.mp4", b"replaced")}
    body = assert_refused(requests.post(url + "/api/upload/image", files=evil,
                                        data={"type": "output", "overwrite": "true"}), 409, "conflict")
    assert ALLOW_OUTPUT_OVERWRITE in body["error"]["details"]
    assert video.read_bytes() == b"a generated video"
    kept = requests.post(url + "/api/upload/image", files=evil, data={"type": "output"})
    assert kept.json()["name"] == "generated_00001_ (1).mp4" and video.read_bytes() == b"a generated video"
    assert requests.post(url + "/api/settings", json={ALLOW_OUTPUT_OVERWRITE: True}).ok
    try:
        assert requests.post(url + "/api/upload/image", files=evil, data={"type": "output", "overwrite": "true"}).ok
        assert video.read_bytes() == b"replaced"
    finally:
        requests.post(url + "/api/settings", json={ALLOW_OUTPUT_OVERWRITE: False})
        video.write_bytes(b"a generated video")


UPLOADS = {
    "no file field": ({}, {"type": "input"}),
    "a text field as the file": ({}, {"image": "not a file"}),
    "an unknown type": ({"image": ("x.png", b"x")}, {"type": "models"}),
    "a parent name": ({"image": ("..", b"x")}, {}),
    "a name with a folder": ({"image": ("a/b.png", b"x")}, {}),
    "a subfolder out": ({"image": ("x.png", b"x")}, {"subfolder": "../.."}),
    "an absolute subfolder": ({"image": ("x.png", b"x")}, {"subfolder": "/tmp"}),
}


@pytest.mark.parametrize("files, data", UPLOADS.values(), ids=UPLOADS.keys())
def test_a_bad_upload_is_a_400_and_writes_nothing(url, server, files, data):
    before = files_under(server[1])
    assert_refused(requests.post(url + "/api/upload/image", files=files or None, data=data), 400)
    assert files_under(server[1]) == before


# DNS rebinding


def port(url: str) -> int:
    return urllib.parse.urlsplit(url).port


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "192.168.1.2",
                                  "0.0.0.0", ""])
@pytest.mark.parametrize("method, path", [("GET", "/api/settings"), ("POST", "/api/userdata/x.json"),
                                          ("GET", "/ws"), ("GET", "/")])
def test_a_request_for_another_host_name_on_loopback_is_refused(url, server, host, method, path):
    name = f"{host}:{port(url)}" if host else ""
    answer = requests.request(method, url + path, data=b"{}", headers={"Host": name, "Origin": f"http://{name}"})
    body = assert_refused(answer, 403, "forbidden")
    assert "--allow-host" in body["error"]["details"]
    assert not (server[1] / "user" / "default" / "x.json").exists()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "[::1]", "app.localhost", "LOCALHOST"])
def test_loopback_host_names_are_served(url, host):
    answer = requests.get(url + "/api/settings", headers={"Host": f"{host}:{port(url)}"})
    assert answer.status_code == 200


def test_allow_host_admits_a_reverse_proxys_name(tmp_path):
    host = HeadlessHost(output_dir=tmp_path / "output", input_dir=tmp_path / "input", show_progress=False)
    with running(PromptServer(host, user_dir=tmp_path / "user", node_classes={}, allowed_hosts=["Proxy.Example"])) as url:
        assert requests.get(url + "/api/settings", headers={"Host": "proxy.example"}).status_code == 200
        assert_refused(requests.get(url + "/api/settings", headers={"Host": "evil.example"}), 403)


# Sizes


def test_a_body_over_the_limit_is_a_413(url):
    assert_refused(requests.post(url + "/api/prompt", data=b"x" * (MAX_BODY + 1)), 413, "request_too_large")
    assert_refused(requests.post(url + "/api/upload/image", files={"image": ("big.png", b"x" * MAX_BODY)}), 413)


@pytest.mark.parametrize("depth", [101, 1000, 100_000])
@pytest.mark.parametrize("path", ["/api/prompt", "/api/settings", "/api/settings/x", "/api/queue", "/api/history"])
def test_deeply_nested_json_is_a_400(url, path, depth):
    answer = requests.post(url + path, data=b"[" * depth + b"]" * depth, headers={"Content-Type": "application/json"})
    assert_refused(answer, 400, "invalid_json")


def test_a_huge_url_or_header_is_refused_without_harm(url):
    assert requests.get(url + "/api/view", params={"filename": "a" * 20_000}).status_code in (400, 414)
    assert requests.get(url + "/api/queue", headers={"X-Junk": "j" * 20_000}).status_code in (400, 431)


# Prompts through the server


def i2v_prompt(**inputs) -> dict:
    prompt = json.loads((WORKFLOWS / "api" / "wan2.1_i2v_480p_14B.json").read_text(encoding="utf-8"))
    for key, value in inputs.items():
        node_id, name = key.split("__")
        prompt[node_id]["inputs"][name] = value
    return prompt


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_cfg_is_a_400_naming_the_input(url, value):
    body = json.dumps({"prompt": i2v_prompt(**{"7__cfg": 0.5})}).replace('"cfg": 0.5', f'"cfg": {value}')
    answer = assert_refused(requests.post(url + "/api/prompt", data=body), 400, "prompt_outputs_failed_validation")
    assert answer["node_errors"]["7"]["errors"][0]["extra_info"]["input_name"] == "cfg"


def test_a_decompression_bomb_upload_is_refused_when_queued(url):
    from test_bad_workflows import png_header

    uploaded = requests.post(url + "/api/upload/image", files={"image": ("bomb.png", png_header(12000, 12000))})
    answer = requests.post(url + "/api/prompt", json={"prompt": i2v_prompt(**{"11__image": uploaded.json()["name"]})})
    body = assert_refused(answer, 400, "prompt_outputs_failed_validation")
    assert "144 megapixels" in body["node_errors"]["11"]["errors"][0]["details"]


def test_a_long_filename_prefix_is_a_400_before_queueing(url):
    answer = requests.post(url + "/api/prompt", json={"prompt": i2v_prompt(**{"9__filename_prefix": "v" * 240})})
    body = assert_refused(answer, 400, "prompt_outputs_failed_validation")
    assert body["node_errors"]["9"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"
    assert requests.get(url + "/api/queue").json() == {"queue_running": [], "queue_pending": []}


# Floods (bounded: a few hundred requests, each answered within the test's time)

FLOODS = {
    "queue reads": lambda url: requests.get(url + "/api/queue", timeout=30),
    "invalid prompts": lambda url: requests.post(url + "/api/prompt", json={"prompt": {"1": {"class_type": "Evil"}}},
                                                 timeout=30),
    "missing files": lambda url: requests.get(url + "/api/view", params={"filename": "absent.png"}, timeout=30),
    "rebinding attempts": lambda url: requests.get(url + "/api/settings", headers={"Host": "evil.example"}, timeout=30),
}
FLOOD_EXPECTED = {"queue reads": 200, "invalid prompts": 400, "missing files": 404, "rebinding attempts": 403}


@pytest.mark.parametrize("flood", FLOODS, ids=FLOODS.keys())
def test_a_flood_of_requests_is_answered_and_the_server_keeps_serving(url, flood):
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: FLOODS[flood](url).status_code, range(200)))
    assert answers == [FLOOD_EXPECTED[flood]] * 200
    assert time.monotonic() - start < 60


def test_object_info_over_a_model_folder_with_link_loops_answers_quickly(tmp_path):
    from runner_fakes import FAKE_NODES, headless_host

    host = headless_host(tmp_path)
    folder = tmp_path / "models" / "diffusion_models"
    for name in "abcd":
        (folder / name).symlink_to(".")
    with running(PromptServer(host, user_dir=tmp_path / "user", node_classes=FAKE_NODES)) as url:
        start = time.monotonic()
        info = requests.get(url + "/api/object_info/LoadModel", timeout=60).json()
        assert time.monotonic() - start < 10
    assert info["LoadModel"]["input"]["required"]["model_name"][0] == ["tiny.safetensors"]
