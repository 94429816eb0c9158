//! An HTTP response cache for towergate, following RFC 9111 for a *shared*
//! cache: freshness, validation, `Vary`, request collapsing and
//! `Cache-Status` (RFC 9211).
//!
//! One [`CacheStore`] per gateway holds the responses of every route, in
//! memory, bounded in bytes. Each cached route gets a [`CacheLayer`] with
//! its own namespace and key rules; [`CacheStore::purge`] removes entries
//! by key, path prefix or namespace.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use towergate_cache::{CacheLayer, CacheStore, ManualClock, CACHE_STATUS};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream_calls = Arc::new(AtomicUsize::new(0));
//! let calls = upstream_calls.clone();
//! let upstream = tower::service_fn(move |_req: Request<Full<bytes::Bytes>>| {
//!     calls.fetch_add(1, Ordering::SeqCst);
//!     async {
//!         Ok::<_, Infallible>(
//!             Response::builder()
//!                 .header("cache-control", "max-age=60")
//!                 .body(Full::new(bytes::Bytes::from("hello")))
//!                 .unwrap(),
//!         )
//!     }
//! });
//!
//! let store = CacheStore::new();
//! // A clock that stands still, so the ages below are exact.
//! let clock = ManualClock::starting_now();
//! let layer = CacheLayer::builder(store.clone())
//!     .namespace("hello")
//!     .clock(Arc::new(clock.clone()))
//!     .build()
//!     .unwrap();
//! let mut svc = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! let get = || Request::get("http://example.com/hello").body(Full::default()).unwrap();
//! let first = svc.ready().await.unwrap().call(get()).await.unwrap();
//! assert_eq!(first.headers()[CACHE_STATUS], "towergate; fwd=uri-miss; stored");
//! // The body is stored as it streams to the client.
//! assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "hello");
//!
//! let second = svc.ready().await.unwrap().call(get()).await.unwrap();
//! assert_eq!(second.headers()[CACHE_STATUS], "towergate; hit; ttl=60");
//! assert_eq!(second.headers()["age"], "0");
//! assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "hello");
//! assert_eq!(upstream_calls.load(Ordering::SeqCst), 1);
//! assert_eq!(store.stats().hits, 1);
//!
//! // A minute later the entry is stale and, without a validator, fetched
//! // again.
//! clock.advance(std::time::Duration::from_secs(61));
//! let third = svc.ready().await.unwrap().call(get()).await.unwrap();
//! assert_eq!(third.headers()[CACHE_STATUS], "towergate; fwd=stale; stored");
//! assert_eq!(upstream_calls.load(Ordering::SeqCst), 2);
//! # }
//! ```
//!
//! # What is stored (RFC 9111 §3)
//!
//! Only responses to `GET` (`HEAD` is answered from a stored `GET`; a
//! `HEAD` miss is forwarded as `HEAD` and not stored). A response is **not**
//! stored when:
//!
//! - the request or the response says `no-store` (a request `no-store`
//!   bypasses the cache altogether);
//! - the response says `private` (qualified `private="..."` counts as
//!   unqualified, §5.2.2.7);
//! - it has `Vary: *` (§4.1: it could never be selected);
//! - its status is not in the layer's
//!   [`cacheable_statuses`](CacheLayerBuilder::cacheable_statuses) (default
//!   [`DEFAULT_CACHEABLE_STATUSES`]); `206` and `304` never are;
//! - it carries `Set-Cookie`: a shared cache would hand one client's cookie
//!   to every other client;
//! - the request carried `Authorization` or was authenticated by a layer
//!   in front (an [`Identity`](towergate_core::Identity) in its extensions:
//!   the credentials may have been stripped, or sent as an API key), unless
//!   the route keys by
//!   identity ([`key_identity`](CacheLayerBuilder::key_identity)) or the
//!   response says `public`, `s-maxage` or `must-revalidate` (§3.5);
//! - on the same terms, the request carried a credential the key does not
//!   hold, which the upstream may check itself and answer per caller: a
//!   header whose name looks like one
//!   ([`looks_secret`](towergate_core::url_text::looks_secret):
//!   `X-API-Key`, `X-Auth-Token`) that is not a
//!   [`key_header`](CacheLayerBuilder::key_header) nor a
//!   [`gateway_set_header`](CacheLayerBuilder::gateway_set_header), or a
//!   query parameter whose decoded name looks like one (`api_key`) that
//!   the [`KeyQuery`] leaves out (`Authorization` and `Cookie` have rules
//!   of their own);
//! - it states no freshness (`s-maxage`, `max-age`, `Expires`) and the layer
//!   has no [`default_ttl`](CacheLayerBuilder::default_ttl), unless it is
//!   `no-cache` with a validator (stored, always revalidated);
//! - it would be useless: stale on arrival, without a validator and without
//!   a `stale-while-revalidate`/`stale-if-error` window;
//! - its body is larger than the store's
//!   [`max_entry_bytes`](CacheStoreBuilder::max_entry_bytes) (it streams
//!   through, just not stored), its body fails, it has trailers, or the
//!   client drops it mid-way.
//!
//! Bodies are never buffered before they are sent: a storable response is
//! *teed* ([`CacheBody`]), each frame going to the client as it arrives
//! while a copy accumulates; the entry is stored at the end of the stream.
//! Hop-by-hop fields and `Age` are not stored; `Content-Length` is set
//! from the stored body.
//!
//! # Freshness and age (§4.2)
//!
//! - Lifetime: `s-maxage`, else `max-age`, else `Expires` − `Date` (the time
//!   of receipt when `Date` is missing or invalid; an invalid `Expires` is
//!   in the past, §5.3), else the layer's `default_ttl` as the heuristic
//!   (§4.2.2).
//! - Directives: names are case-insensitive, quoted values are accepted,
//!   a directive name inside a quoted string is ignored, duplicates keep the
//!   first occurrence (§4.2.1), an invalid value (`max-age=a1`, `-1`)
//!   counts as `0`, values saturate at 2^31 (§1.2.2).
//! - Age: `corrected_initial_age` from the apparent age (receipt − `Date`),
//!   the upstream's `Age` and the response delay, plus the time resident
//!   (§4.2.3). An `Age` that is not one line of digits is ignored. Every
//!   answer from the store carries `Age`.
//! - Time comes from a [`Clock`] ([`SystemClock`]; tests inject a
//!   [`ManualClock`]).
//!
//! # Using a stored response (§4)
//!
//! - Fresh and neither the response (`no-cache`) nor the request
//!   (`no-cache`, `max-age=N` below the age,
//!   `min-fresh`) asks for validation: served from the store.
//! - Otherwise forwarded, conditionally when it has validators (§4.3.1):
//!   the client's `If-None-Match`/`If-Modified-Since` are replaced by the
//!   stored `ETag`/`Last-Modified`. A `304` (whose `ETag`, if any, matches)
//!   freshens the entry: its fields replace the stored ones except
//!   `Content-Length`, hop-by-hop fields and `Set-Cookie` (which goes to
//!   this client only) (§3.2, §4.3.4), and the stored body is served. Any
//!   other answer replaces the entry when storable.
//! - Stale responses are served only when allowed: never with
//!   `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`
//!   (§4.2.4, §5.2.2). Within `stale-while-revalidate` (RFC 5861 §3) the
//!   stale response is served at once and one background revalidation per
//!   entry runs; within `stale-if-error` (response or request directive,
//!   RFC 5861 §4) an upstream error or a `500`/`502`/`503`/`504` is
//!   answered with the stale response; a request's `max-stale` is honoured.
//!   Without `stale-if-error` the cache does not serve stale on errors.
//! - Client conditionals on a usable response: `If-None-Match` (weak
//!   comparison, `*`, lists), else `If-Modified-Since` against
//!   `Last-Modified` (or `Date`), answered `304` by the cache with the
//!   fields of RFC 9110 §15.4.5 (§4.3.2). On a miss they are forwarded as
//!   they are (and the `304` not stored).
//! - `only-if-cached` without a usable response: `504` problem (§5.2.1.7).
//! - `Range` requests are answered with the full stored response (RFC 9110
//!   §14.2 lets a server ignore `Range`); on a miss they are forwarded and
//!   the `206` is not stored.
//!
//! # Invalidation (§4.4)
//!
//! A request with an unsafe method (anything but GET, HEAD, OPTIONS,
//! TRACE) answered `2xx`/`3xx` removes every variant stored for its target
//! URI, and for the `Location` and `Content-Location` URIs on the same
//! host. The keys removed are those the request itself would have (same
//! key headers and identity): on an identity-keyed route a user's `POST`
//! invalidates that user's entries.
//!
//! # Keys
//!
//! Primary key (printable, as [`CacheStore::keys`] lists them):
//!
//! ```text
//! {namespace}|GET|{scheme}://{host}{path}[?{query}][|fh:{hosts}][|fw:{hosts}][|fp:{protos}][|fx:{name}={values}]...[|h:{name}={value}]...[|id:{method}:{issuer}:{identity}]
//! ```
//!
//! `GET` is the method class (HEAD shares it); the query is filtered per
//! [`KeyQuery`] and sorted (`?a=1&b=2` and `?b=2&a=1` share an entry;
//! with [`KeyQuery::Only`], a request whose left-out pairs hold a `;` is
//! not cached, as upstreams differ on splitting there); `fh:` and `fw:`
//! hold the hosts of `X-Forwarded-Host` and of `Forwarded`'s `host=`, which
//! upstreams build links from, when the request's
//! [`ClientAddr`](towergate_core::ClientAddr) is a trusted proxy (whose
//! headers the gateway passes on) or there is none; on the same terms,
//! `fp:` holds `Forwarded`'s `proto=`, and each `fx:` the values of
//! `X-Forwarded-Proto` or one of the
//! [`URL_CLAIMS`](towergate_core::URL_CLAIMS) (`X-Forwarded-Prefix`,
//! `X-Original-URL`, ...), which upstreams build URLs from or serve
//! another path by; key headers follow in configuration order (`h:name` alone when the
//! request lacks it); `id:` is the configured `Identity` field, and a
//! request without it is not cached. Header values and identities are
//! percent-encoded so no value can forge another member.
//! [`Purge::Key`] takes this string, [`Purge::Prefix`] matches the path.
//!
//! `Vary` forms the secondary key (§4.1): the primary key holds an index
//! naming the request fields the resource varies on, and each variant is
//! stored under the primary key plus the normalised values of those fields
//! in the request (lines combined, whitespace around commas dropped;
//! absent differs from empty). Up to 64 variants per primary key. A
//! response whose `Vary` names other fields replaces the stored variants
//! and is stored itself.
//!
//! # Request collapsing
//!
//! Concurrent misses for one primary key make one upstream request: the
//! first is the leader, the others wait (at most
//! [`collapse_timeout`](CacheLayerBuilder::collapse_timeout), at most
//! [`max_waiters`](CacheLayerBuilder::max_waiters) per key, otherwise they
//! go upstream at once) and are served from the store when the leader's
//! entry is complete. If the leader's response is not storable (or for
//! another variant), or the upstream failed, the waiters go upstream
//! themselves, side by side. If the leader gave up before it knew (its
//! client went away, its body failed or was dropped), they join again:
//! one of them leads the next try while the others wait, within the
//! timeout counted from their first join. HEAD, conditional and `Range`
//! requests do not collapse.
//!
//! # `Cache-Status` (RFC 9211)
//!
//! Every response of the layer gets one member, appended after any
//! upstream cache's (the name is configurable with
//! [`cache_status_name`](CacheLayerBuilder::cache_status_name)):
//!
//! | Value | When |
//! |---|---|
//! | `towergate; hit; ttl=N` | served fresh from the store (`ttl`: seconds of freshness left) |
//! | `towergate; hit; ttl=N; detail=collapsed` | a collapsed waiter served from the leader's entry |
//! | `towergate; hit; ttl=-N; detail=stale-while-revalidate` | served stale, revalidating in the background |
//! | `towergate; hit; ttl=-N; detail=max-stale` | served stale as the request's `max-stale` allows |
//! | `towergate; fwd=uri-miss[; stored]` | nothing stored for the URI |
//! | `towergate; fwd=vary-miss[; stored]` | stored, but not for this request's `Vary` selection |
//! | `towergate; fwd=miss[; stored]` | a collapsed waiter whose leader's response could not be used |
//! | `towergate; fwd=stale; fwd-status=304; ttl=N` | stale, revalidated upstream (`304`), stored body served |
//! | `towergate; fwd=request; fwd-status=304; ttl=N` | the same, validation asked for by the request |
//! | `towergate; fwd=stale[; stored]` | stale, the upstream sent a new response |
//! | `towergate; fwd=stale[; fwd-status=503]; ttl=-N; detail=stale-if-error` | upstream failed, stale served |
//! | `towergate; fwd=bypass` | not cacheable: request `no-store`, missing identity, a `;` in a left-out query pair |
//! | `towergate; fwd=method` | a method other than GET/HEAD |
//! | `towergate; detail=only-if-cached` | the `504` of an `only-if-cached` miss |
//!
//! `stored` means the response is being stored as it streams; it is
//! dropped if the body turns out too large or fails.
//!
//! # Conformance
//!
//! `tests/conformance.rs` ports the cases of the HTTP WG cache test suite
//! (<https://github.com/http-tests/cache-tests>) that apply to a shared
//! cache in front of one origin, each naming the suite's test id; the
//! crate README lists what was ported and what was left out and why.

mod body;
mod cache_control;
mod clock;
mod collapse;
mod conditional;
pub mod error;
mod freshness;
mod future;
mod key;
mod layer;
mod policy;
mod service;
mod store;
mod vary;

pub use body::CacheBody;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::BuildError;
pub use future::ResponseFuture;
pub use key::KeyQuery;
pub use layer::{CacheLayer, CacheLayerBuilder, DEFAULT_CACHEABLE_STATUSES};
pub use service::{CACHE_STATUS, Cache};
pub use store::{CacheStats, CacheStore, CacheStoreBuilder, Purge};
