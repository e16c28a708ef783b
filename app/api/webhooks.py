"""Tell a client's URL when its job ends, so a script can submit and walk away instead of polling.

One ``WebhookSender`` per queue listens for ended jobs; a job that carries a webhook URL gets one JSON POST
``{id, state, error, images, seeds, infotexts, ...}`` on a background thread, retried with backoff when the
receiver is down or answers 5xx. Only http(s) URLs are accepted, at submit time and again before sending.
"""

from __future__ import annotations

import logging
import threading
import time
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any
from urllib.parse import urlsplit

import httpx

from modules.errors import RequestError
from modules.jobs.queue import Job

log = logging.getLogger(__name__)

USER_AGENT = "sfumato-webhook"
NAT64_PREFIX = IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address a NAT64 gateway reaches


def check_webhook_url(url: str | None, allow_private: bool = True) -> str | None:
    """The URL if it is http(s) with a host; anything else (file:, ftp:, a bare path) names ``webhook_url``.

    With ``allow_private`` False (a studio reachable from other machines) a host that resolves to any address that
    is not globally routable (``is_public_address``) is refused too, so a caller cannot make the studio post into
    the network it sits in (SSRF)."""
    if url is None or not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise RequestError("webhook_url", f"must be an http:// or https:// URL with a host, got {url!r}")
    if not allow_private:
        internal = _internal_address(parts.hostname)
        if internal:
            raise RequestError("webhook_url", f"{parts.hostname} resolves to {internal}, an internal address; "
                               "this studio is exposed, so webhooks may only go to public addresses")
    return url.strip()


def _internal_address(host: str) -> str | None:
    """The first address ``host`` resolves to that is not globally routable (or the host itself when it cannot be
    resolved: refusing is the safe answer), else None."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError, ValueError):
        return host
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not is_public_address(address):
            return str(address)
    return None


def is_public_address(address: IPv4Address | IPv6Address) -> bool:
    """Whether an exposed studio may post to ``address``: only globally routable unicast addresses.

    A deny-list (private, loopback, link-local ...) misses ranges nobody thought of: 100.64.0.0/10 (carrier-grade
    NAT, where cloud metadata services such as 100.100.100.200 live), benchmarking and documentation ranges, ...
    so the rule is the IANA special-purpose registry's "globally reachable" (``is_global``). IPv6 forms that carry
    an IPv4 address inside (6to4 2002::/16, Teredo 2001::/32, IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, the
    deprecated IPv4-compatible ::/96) reach that IPv4 address through a relay or the host's own stack, so the
    embedded address must be public too: Python's ``is_global`` judges only the outer prefix, and its answers for
    these prefixes differ between versions."""
    if not address.is_global or address.is_multicast or address.is_unspecified:
        return False
    if isinstance(address, IPv6Address):
        if int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d (deprecated by RFC 4291): never a real host
            return False
        embedded: list[IPv4Address | None] = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address in NAT64_PREFIX:
            embedded.append(IPv4Address(int(address) & 0xFFFFFFFF))
        return all(is_public_address(inner) for inner in embedded if inner is not None)
    return True


def job_image_path(job_id: str, index: int) -> str:
    return f"/api/v1/jobs/{job_id}/images/{index}"


def job_artifact_path(job_id: str, index: int) -> str:
    return f"/api/v1/jobs/{job_id}/artifacts/{index}"


class WebhookSender:
    """Posts the end-of-job payload; retries ``tries`` times, waiting ``backoff``, 2x``backoff``, ... between."""

    def __init__(self, tries: int = 3, backoff: float = 1.0, timeout: float = 10.0,
                 allow_private: bool = True) -> None:
        self.allow_private = allow_private  # False when the studio is exposed (see check_webhook_url)
        self.tries = max(1, tries)
        self.backoff = backoff
        self.timeout = timeout
        self._bases: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember_base(self, job_id: str, base_url: str) -> None:
        """Where the job's images are served, so the payload can carry absolute URLs."""
        with self._lock:
            self._bases[job_id] = base_url.rstrip("/")

    def on_job_end(self, job: Job) -> None:
        """Queue listener (runs on the worker thread): hand the delivery to its own thread at once."""
        with self._lock:
            base = self._bases.pop(job.id, "")
        if not job.webhook:
            return
        payload = webhook_payload(job, base)
        threading.Thread(target=self.deliver, args=(job.webhook, payload), name=f"webhook-{job.id[:8]}",
                         daemon=True).start()

    def deliver(self, url: str, payload: dict[str, Any]) -> bool:
        """POST until a 2xx; give up on a 4xx other than 408/429 (the receiver refused it) or after the last try."""
        try:  # checked again when sending: the name may resolve elsewhere by now
            check_webhook_url(url, self.allow_private)
        except RequestError as error:
            log.warning("not calling webhook %r: %s", url, error.message)
            return False
        headers = {"User-Agent": USER_AGENT, "X-Sfumato-Job": str(payload.get("id", ""))}
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = httpx.post(url, json=payload, headers=headers, timeout=self.timeout)
            except httpx.HTTPError as error:
                log.info("webhook %s try %d failed: %s", url, attempt + 1, error)
                continue
            if response.is_success:
                return True
            log.info("webhook %s try %d answered %d", url, attempt + 1, response.status_code)
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                return False
        log.warning("webhook %s gave up after %d tries", url, self.tries)
        return False


def webhook_payload(job: Job, base_url: str = "") -> dict[str, Any]:
    """What the receiver gets: the job's end state and where to fetch its artifacts (and, by their own route,
    its images)."""
    result = job.result
    artifacts = result.artifacts if result is not None else []
    images = [item for item in artifacts if item.type == "image" and not item.grid]
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "source": job.source,
        "error": job.error,
        "error_field": job.error_field,
        "interrupted": bool(result.interrupted) if result is not None else False,
        "images": [base_url + job_image_path(job.id, index) for index in range(len(images))],
        "seeds": [item.parameters.get("seed") for item in images],
        "infotexts": [item.infotext for item in images],
        "artifacts": [{"type": item.type, "media_type": item.media_type, "grid": item.grid,
                       "url": base_url + job_artifact_path(job.id, index)} for index, item in enumerate(artifacts)],
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
    }


def install_webhooks(queue: Any, **options: Any) -> WebhookSender:
    """The queue's one sender, registered as a listener the first time; later calls return the same one.

    Kept on the queue itself (no module-level registry), so two API apps over one queue never post a webhook
    twice and a queue's sender goes away with it."""
    with queue.extras_lock:
        sender = queue.extras.get("webhooks")
        if sender is None:
            sender = WebhookSender(**options)
            queue.add_listener(sender.on_job_end)
            queue.extras["webhooks"] = sender
        return sender
