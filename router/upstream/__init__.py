"""The OpenAI-compatible upstream client: fallback chains, retries and cooldowns.

The router must never be the reason for an outage, so a call goes to a *chain*
of models (`chain_for`: the chosen model, its catalog fallbacks, then the other
candidates that meet the bar, cheapest first) and moves along it when a provider
fails. The rules, in one place (`UpstreamClient._call_chain`):

- connect error, timeout, 429, 5xx: retry the same model up to `max_retries`
  times (exponential backoff, or the `Retry-After` it sent when that is at most
  `max_retry_after_s`; a longer `Retry-After` opens the model's breaker for that
  long and moves on, since waiting would hold the caller), then the next model.
  A timeout is not retried on the same model: it already cost the caller a full
  timeout.
- 400 `context_length_exceeded`: the next model in the chain with a larger
  window; if none, the smallest-window catalog model that fits.
- 401, 403, 404 (`UpstreamRejected`): the provider refused the router's key or
  does not know the model, which is the router's set-up, not the caller's
  request: no retry, the model's breaker opens at once, the next model. A chain
  that ends so answers 502 blaming the provider, never the provider's 401
  (an OpenAI client would report the caller's key as wrong).
- any other 4xx: raised at once as `UpstreamClientError` with the upstream's
  status and message. It is the request that is wrong; another model would
  reject it too, and retrying would hide the caller's bug.
- a model whose breaker is open (`Cooldowns`) is skipped, unless every model of
  the chain is, in which case the chain is tried anyway.

Errors are translated at ONE boundary (`translate_error`) into the tree below;
when the whole chain fails, the last error is raised with `.attempts` set.
Streaming (`UpstreamClient.stream`) falls back only until the first event has
arrived; once bytes went to the client a failure becomes an SSE error event then
`data: [DONE]`, never a silent cut. API keys come from the environment
(`ModelSpec.api_key`), go only into the `Authorization` header and are redacted
from anything the upstream echoes back. Under `base_url_override` (one gateway
for every model) the provider keys are never sent: that URL gets
`override_api_key` or no key at all (`key_for`).

Metrics and logs hook in through `on_attempt(Attempt)` and
`Cooldowns(on_state_change=...)`, and every result carries its attempts.

Where the code lives: the chain and its rules in `_client` (`chain_for`,
`UpstreamClient`); the error tree and `translate_error`
(`router.upstream._errors`), the breaker (`router.upstream._breaker`), results and usage
(`router.upstream._results`) and the started stream (`router.upstream._stream`);
the one shared HTTP client the calls go through (`build_http_client`: aiohttp's
client under httpx, proxies from the environment, TLS verified) in
`router.upstream._http`, its transport in `router.upstream._aiohttp`.
"""

from router.upstream._aiohttp import (
    AiohttpTransport,
)
from router.upstream._breaker import (
    Cooldowns,
)
from router.upstream._breaker_sync import (
    SharedCooldowns,
)
from router.upstream._client import (
    UpstreamClient,
    chain_for,
)
from router.upstream._errors import (
    ContextLengthExceeded,
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.upstream._http import (
    TRANSPORTS,
    build_http_client,
    proxy_mounts,
)
from router.upstream._results import (
    Attempt,
)
from router.upstream._sse import (
    DONE,
    SSEDecoder,
    encode_data,
    error_event,
)

__all__ = [
    "AiohttpTransport",
    "Attempt",
    "ContextLengthExceeded",
    "Cooldowns",
    "DONE",
    "SSEDecoder",
    "SharedCooldowns",
    "TRANSPORTS",
    "UpstreamClient",
    "UpstreamClientError",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamServerError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "build_http_client",
    "chain_for",
    "encode_data",
    "error_event",
    "proxy_mounts",
]
