//! Where TATs live: a [`Store`] decides a [`Batch`] (all the buckets of one
//! request) atomically and answers with a [`Verdict`].
//!
//! - [`MemoryStore`]: sharded, bounded, one process.
//! - [`RedisStore`]: shared by every gateway instance, one Lua script call
//!   per decision.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::StoreError;
use crate::gcra::{Gcra, Verdict};

mod memory;
mod redis;

pub use self::memory::{MemoryStore, MemoryStoreBuilder};
pub use self::redis::{RedisStore, RedisStoreBuilder};

/// A place to keep rate-limit state.
///
/// `check` decides every bucket of a batch at once with
/// [`gcra::decide`](crate::gcra::decide), at the store's notion of now, and
/// stores the new TATs only if the verdict is allowed; no other decision may
/// interleave between reading and writing those buckets. The trait is
/// object-safe: layers hold an `Arc<dyn Store>`.
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Decides `batch`.
    fn check(&self, batch: &Batch) -> Check;
}

/// All the buckets of one request, decided together.
#[derive(Clone)]
pub struct Batch {
    tag: String,
    buckets: Buckets,
}

/// One limit's bucket for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    id: String,
    gcra: Gcra,
}

/// The answer of a [`Store`]: ready at once (memory) or later (network).
///
/// A future either way; [`Check::into_ready`] lets a caller skip the
/// poll when the answer is already there.
#[must_use = "a check does nothing unless polled"]
pub struct Check {
    kind: CheckKind,
}

/// One limit per layer is the common case: its batch needs no `Vec`.
#[derive(Clone)]
enum Buckets {
    One(Bucket),
    Many(Vec<Bucket>),
}

type BoxCheck = Pin<Box<dyn Future<Output = Result<Verdict, StoreError>> + Send + 'static>>;

enum CheckKind {
    Ready(Option<Result<Verdict, StoreError>>),
    Pending(BoxCheck),
}

// === impl Batch ===

impl Batch {
    /// A batch of buckets. `tag` groups buckets that must live together:
    /// the Redis store puts it in a `{hash tag}`, so every key of one
    /// decision lands in one Cluster slot. A bucket must always be sent
    /// with the same tag.
    pub fn new(tag: impl Into<String>, buckets: Vec<Bucket>) -> Self {
        Self {
            tag: tag.into(),
            buckets: Buckets::Many(buckets),
        }
    }

    /// A batch of one bucket, without allocating a `Vec`.
    pub(crate) fn one(tag: String, bucket: Bucket) -> Self {
        Self {
            tag,
            buckets: Buckets::One(bucket),
        }
    }

    /// The co-location tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The buckets, in limit order.
    pub fn buckets(&self) -> &[Bucket] {
        match &self.buckets {
            Buckets::One(bucket) => std::slice::from_ref(bucket),
            Buckets::Many(buckets) => buckets,
        }
    }
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.buckets() == other.buckets()
    }
}

impl Eq for Batch {}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("tag", &self.tag)
            .field("buckets", &self.buckets())
            .finish()
    }
}

// === impl Bucket ===

impl Bucket {
    /// The bucket `id` (unique per limit and key) with its limit.
    pub fn new(id: impl Into<String>, gcra: Gcra) -> Self {
        Self {
            id: id.into(),
            gcra,
        }
    }

    /// The bucket's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bucket's limit.
    pub fn gcra(&self) -> Gcra {
        self.gcra
    }
}

// === impl Check ===

impl Check {
    /// An answer that is already known.
    pub fn ready(result: Result<Verdict, StoreError>) -> Self {
        Self {
            kind: CheckKind::Ready(Some(result)),
        }
    }

    /// An answer that needs I/O. Boxed because each store's future is a
    /// different type and `Store` must stay object-safe; only stores that
    /// go to the network pay for the allocation.
    pub fn pending(
        fut: impl Future<Output = Result<Verdict, StoreError>> + Send + 'static,
    ) -> Self {
        Self {
            kind: CheckKind::Pending(Box::pin(fut)),
        }
    }

    /// The answer if it is already known, or the check back.
    pub fn into_ready(self) -> Result<Result<Verdict, StoreError>, Self> {
        match self.kind {
            CheckKind::Ready(Some(result)) => Ok(result),
            kind => Err(Self { kind }),
        }
    }
}

impl Future for Check {
    type Output = Result<Verdict, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.kind {
            CheckKind::Ready(result) => match result.take() {
                Some(result) => Poll::Ready(result),
                None => Poll::Ready(Err(StoreError::Polled)),
            },
            CheckKind::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CheckKind::Ready(result) => f.debug_tuple("Check::Ready").field(result).finish(),
            CheckKind::Pending(_) => f.write_str("Check::Pending"),
        }
    }
}
