"""Step caching for the Wan DiT: skip whole forwards (or all blocks but the first) at steps whose
result the previous one predicts, reusing the cached residual. One interface (``policy.Policy``),
four published policies (``teacache``, ``magcache``, ``easycache``, ``first_block``), one run
controller (:class:`StepCache`)::

    cache = StepCache(make_policy("magcache", model.config))
    latent = sample(model, shape, ..., step_cache=cache)
    print(cache.summary())
    # magcache threshold 0.12, K 4, retention 0.2: model 42 forwards run, 58 skipped
"""

from .cache import BRANCHES, FEW_STEPS, POLICIES, StepCache, make_policy
from .easycache import EasyCache
from .first_block import FirstBlockCache
from .magcache import MagCache
from .policy import Policy, Step
from .teacache import TeaCache

__all__ = ["BRANCHES", "FEW_STEPS", "POLICIES", "StepCache", "make_policy", "Policy", "Step",
           "TeaCache", "MagCache", "EasyCache", "FirstBlockCache"]
