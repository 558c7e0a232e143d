"""Verified TwelveLabs webhooks that make a watcher poll at once.

TwelveLabs POSTs a signed JSON event when an analysis task (each batch item
is one) finishes or fails. This module checks the ``TL-Signature`` header
(`verify`), receives deliveries in an aiohttp.web handler (`WebhookReceiver`)
and turns each into ``Watcher.refresh()``, so a batch's next event arrives
seconds after the change rather than at the next poll. Polling stays on as the
safety net for lost deliveries. `serve_webhooks` runs a receiver beside a
watcher for one ``async with``; `sign` makes test deliveries.

See docs/webhooks.md, including what we assume about the undocumented batch
completion notification.
"""

from ._webhooks.event import (
    REFRESH_ALL,
    RefreshAll,
    WebhookEvent,
    WebhookEventType,
    WebhookPayloadError,
    decode_event,
    refresh_targets,
)
from ._webhooks.receiver import Refreshable, WebhookReceiver, WebhookStatistics
from ._webhooks.server import WebhookServer, serve_webhooks
from ._webhooks.signature import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    parse_signature_header,
    sign,
    verify,
    verify_signature,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "REFRESH_ALL",
    "SIGNATURE_HEADER",
    "RefreshAll",
    "Refreshable",
    "WebhookEvent",
    "WebhookEventType",
    "WebhookPayloadError",
    "WebhookReceiver",
    "WebhookServer",
    "WebhookStatistics",
    "decode_event",
    "parse_signature_header",
    "refresh_targets",
    "serve_webhooks",
    "sign",
    "verify",
    "verify_signature",
]

# Public objects report this module as their home, as in tracebacks and reprs.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj
