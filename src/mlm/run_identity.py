"""A pre-training run's identity, fixed once before any worker starts: its `run_id`, the
Pushgateway it reports to, and the model `init_from: registry:NAME` names now.

Kept out of `mlm.config` (settings only: no environment, no registry lookups) and resolved by
whoever starts the run: the local launcher before it starts its workers, or the step itself when
it runs alone, so that every worker reports under the same run and starts from the same model.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid

from mlm.config import PretrainConfig
from mlm.monitoring import PUSHGATEWAY_ENV


def with_run_identity(config: PretrainConfig) -> PretrainConfig:
    """`config` with `pushgateway_url` from $MLM_PUSHGATEWAY_URL and a new unique `run_id` where
    they are not set, and `init_from` "registry:NAME" replaced by the model it names now (None
    while none is published)."""
    run_id = config.run_id or f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    pushgateway = config.pushgateway_url or os.environ.get(PUSHGATEWAY_ENV) or None
    init_from = config.init_from
    if init_from:
        from mlm.registry import resolve_init_from

        init_from = resolve_init_from(init_from, config.model_registry_uri)
    return dataclasses.replace(
        config, run_id=run_id, pushgateway_url=pushgateway, init_from=init_from
    )
