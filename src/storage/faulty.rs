//! A fault-injecting `ObjectStore` wrapper: holds requests at a gate, slows them, fails them, and
//! counts them. The storage tests use it to prove what touches the bucket and what never waits
//! on it; the query-latency bench uses it to make the bucket slow.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::watch;

/// The switches of a [`FaultyStore`], shared with whoever drives the faults.
#[derive(Debug)]
pub struct Faults {
    held: watch::Sender<bool>,
    failing: AtomicBool,
    failing_puts: AtomicBool,
    delay_ms: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    waiting: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            held: watch::channel(false).0,
            failing: AtomicBool::new(false),
            failing_puts: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            waiting: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Parks every request at the gate until [`Faults::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }
    /// Lets parked and future requests through.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
    /// Makes every request fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
    /// Makes every put fail as a full bucket's do (reads and deletes still work), or succeed
    /// again.
    pub fn set_failing_puts(&self, failing: bool) {
        self.failing_puts.store(failing, Ordering::SeqCst);
    }
    /// Adds a delay to every request.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
    /// Requests that read (get, head, list) so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
    /// Requests that write (put, delete, copy) so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
    /// Waits until at least `n` requests are parked at the gate.
    pub async fn parked(&self, n: u64) {
        let mut rx = self.waiting.subscribe();
        rx.wait_for(|w| *w >= n)
            .await
            .expect("sender lives in self");
    }

    async fn enter_put(&self) -> Result<()> {
        self.enter(true).await?;
        if self.failing_puts.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected: the bucket is full".into(),
            });
        }
        Ok(())
    }

    async fn enter(&self, write: bool) -> Result<()> {
        if write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        } else {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let mut held = self.held.subscribe();
        if *held.borrow() {
            self.waiting.send_modify(|w| *w += 1);
            let _ = held.wait_for(|h| !*h).await;
            self.waiting.send_modify(|w| *w -= 1);
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected outage".into(),
            });
        }
        Ok(())
    }
}

/// An `ObjectStore` that passes every call to `inner` after the [`Faults`] allow it.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    /// Wraps `inner`; the returned `Faults` drive it.
    pub fn new(inner: Arc<dyn ObjectStore>) -> (Self, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            Self {
                inner,
                faults: faults.clone(),
            },
            faults,
        )
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.faults.enter_put().await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.faults.enter_put().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.enter(false).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.faults.enter(false).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        futures::stream::once(async move { faults.enter(true).await.map(|()| locations) })
            .flat_map(move |gate| match gate {
                Ok(locations) => inner.delete_stream(locations),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move { faults.enter(false).await })
            .flat_map(move |gate| match gate {
                Ok(()) => inner.list(prefix.as_ref()),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.faults.enter(false).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.faults.enter(true).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
