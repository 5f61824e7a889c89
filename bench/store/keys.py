"""Every cache and record key, built here and nowhere else: a key is the hash of everything
that determines a computation (data, architecture, recipe, seed, options, the plugins' code)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Bump to invalidate every cached network and record at once.
CACHE_VERSION = 1


def config_hash(spec: dict[str, Any]) -> str:
    blob = json.dumps({"cache_version": CACHE_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
