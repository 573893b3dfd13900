"""Wan's default negative prompts (``wan/configs/shared_config.py``, both Wan repos).

The official runners use them when the user's negative prompt is empty: Wan 2.1 I2V prepends
``镜头晃动，`` ("camera shake"), Wan 2.1 FLF2V prepends ``镜头切换，`` ("shot change"), everything
else (all Wan 2.2 tasks) uses the plain string.
"""

NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
NEGATIVE_PROMPT_I2V = "镜头晃动，" + NEGATIVE_PROMPT
NEGATIVE_PROMPT_FLF2V = "镜头切换，" + NEGATIVE_PROMPT
