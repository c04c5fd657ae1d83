"""Fail fast when a Hugging Face hub model can be neither read from the cache nor fetched.

Without this check an unreachable hub (no network, a firewall, a typo in HF_ENDPOINT)
shows up as a score of retry warnings over most of a minute before the loader gives up.
One TCP connection with a short timeout answers the same question at once.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from probe.errors import ProbeError

TRUTHY = {"1", "true", "yes", "on"}
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _cached(repo_id: str) -> bool:
    """Whether the model's config.json is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id: let the loader say so
        return True


def check_hub_reachable(repo_id: str, timeout: float = 5.0) -> None:
    """Raise a one-line :class:`ProbeError` if ``repo_id`` is not cached and the hub is
    offline (``HF_HUB_OFFLINE``) or does not accept a connection within ``timeout``."""
    from huggingface_hub import constants

    if _cached(repo_id):
        return
    where = f"model {repo_id!r} is not in the local Hugging Face cache"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUTHY or constants.HF_HUB_OFFLINE:
        raise ProbeError(f"{where} and HF_HUB_OFFLINE is set; download it first or pass a "
                         f"local folder")
    if any(os.environ.get(v) for v in PROXY_VARS):
        return  # only the proxy knows whether the hub is reachable; let the loader try
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as err:
        raise ProbeError(f"{where} and the hub ({endpoint}) is unreachable "
                         f"({err.strerror or err}); connect, or pass a local folder") from None
