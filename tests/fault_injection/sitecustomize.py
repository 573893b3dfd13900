"""Imported at start-up by every Python process with this folder on PYTHONPATH: with
``WANRT_TEST_FAULT=RANK:dies|hangs``, the torchrun worker of that rank exits, or sleeps for an
hour, when its DiT starts its second forward (the others are then inside a collective)."""

import os

_target, _, _fault = os.environ.get("WANRT_TEST_FAULT", "").partition(":")

if _fault and os.environ.get("RANK") == _target:
    import time

    from wanrt.wan_core.dit.model import WanModel

    _forward, _calls = WanModel.forward, []

    def _failing_forward(self, *args, **kwargs):
        _calls.append(1)
        if len(_calls) == 2:
            if _fault == "dies":
                os._exit(3)
            time.sleep(3600)
        return _forward(self, *args, **kwargs)

    WanModel.forward = _failing_forward
