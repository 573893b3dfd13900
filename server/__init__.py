"""``python -m wanrt serve``: a ComfyUI-compatible server on top of the WanRT runner, hosting the
official ComfyUI frontend (``comfyui-frontend-package``), so the example workflows can be opened,
edited and queued in a browser without ComfyUI, and ComfyUI API clients work against it.

Needs the ``server`` extra (aiohttp and the pinned frontend): ``pip install 'comfyui-wanrt[server]'``.

    from wanrt.server.app import PromptServer, running
    server = PromptServer(HeadlessHost.from_paths("models"), user_dir="user")
    with running(server) as url:          # a background thread; or serve(server, port=8188)
        requests.post(url + "/api/prompt", json={"prompt": api_prompt})

Modules: ``app`` (routes, PromptServer), ``queue`` (queue, history, jobs), ``worker`` (runs prompts),
``clients`` (WebSocket), ``object_info``, ``templates``, ``userdata``, ``files`` (safe paths),
``system``, ``errors``, ``cli``. Nothing here is imported by ``import wanrt``: aiohttp stays optional.
"""
