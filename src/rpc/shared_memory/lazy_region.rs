//! A region created the first time a message needs it.

use std::sync::OnceLock;

use super::outgoing::Outgoing;

/// This side's region of at most `size` bytes, created when the first
/// message longer than the threshold is encoded (a connection that never
/// sends one never makes one). Size 0: never.
#[derive(Debug, Default)]
pub(crate) struct LazyRegion {
    size: u64,
    region: OnceLock<Option<Outgoing>>,
}

impl LazyRegion {
    /// A region of `size` bytes when needed; none if `size` is 0.
    pub(crate) fn new(size: u64) -> LazyRegion {
        LazyRegion {
            size,
            region: OnceLock::new(),
        }
    }

    /// The region, created now if need be. None if there is none (size 0,
    /// or creating it failed: then messages go through the socket, as
    /// they always can).
    pub(crate) fn get(&self) -> Option<&Outgoing> {
        if self.size == 0 {
            return None;
        }
        self.region
            .get_or_init(|| match Outgoing::create(self.size) {
                Ok(region) => Some(region),
                Err(e) => {
                    tracing::debug!(
                        "anyfork rpc: no shared memory, large messages use the socket: {e}"
                    );
                    None
                }
            })
            .as_ref()
    }
}
