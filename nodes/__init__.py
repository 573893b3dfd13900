"""ComfyUI nodes (classic API). Filled by the nodes module files; nothing imports ComfyUI here."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
