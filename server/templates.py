"""``/workflow_templates``: our ``workflows/`` as the frontend's template browser shows custom-node
packs' example workflows (Templates → Extensions → wanrt), with a generated thumbnail each."""

from __future__ import annotations

import asyncio
import functools
import io
import os

from aiohttp import web

from .errors import HTTPError

PACK = "wanrt"
WORKFLOWS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")


def names() -> list[str]:
    """The UI-format workflows at the top of ``workflows/``, without ``.json``."""
    if not os.path.isdir(WORKFLOWS_DIR):
        return []
    return sorted(name[:-5] for name in os.listdir(WORKFLOWS_DIR) if name.endswith(".json"))


def routes() -> list[tuple[str, str, object]]:
    return [("GET", "/workflow_templates", list_templates),
            ("GET", f"/workflow_templates/{PACK}/{{name}}", get_template)]


async def list_templates(request):
    """``{pack: [template names]}``."""
    return web.json_response({PACK: names()})


async def get_template(request):
    """``<name>.json``, or the ``<name>.jpg`` thumbnail."""
    stem, ext = os.path.splitext(request.match_info["name"])
    if stem not in names() or ext not in (".json", ".jpg"):
        raise HTTPError(404, f"no workflow template {request.match_info['name']!r}",
                        f"templates: {', '.join(names())}")
    if ext == ".json":
        return web.FileResponse(os.path.join(WORKFLOWS_DIR, stem + ext))
    return web.Response(body=await asyncio.to_thread(thumbnail, stem), content_type="image/jpeg")


@functools.lru_cache(maxsize=64)
def thumbnail(title: str) -> bytes:
    """A card with the workflow's name on a dark tile (the workflows ship no pictures)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (384, 384), (32, 36, 44))
    draw = ImageDraw.Draw(image)
    draw.text((24, 24), "WanRT", fill=(120, 160, 255), font_size=40)
    draw.text((24, 300), title, fill=(230, 230, 230), font_size=26)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()
