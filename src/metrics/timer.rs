//! [`PublishTimer`]: the backplane's publish latency, a no-op without the
//! `metrics` feature.

/// Times backplane publish pipelines into
/// [`names::BACKPLANE_PUBLISH`](super::names::BACKPLANE_PUBLISH).
#[derive(Debug)]
pub(crate) struct PublishTimer {
    #[cfg(feature = "metrics")]
    histogram: metrics::Histogram,
}

/// When one publish started (nothing without the `metrics` feature).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    #[cfg(feature = "metrics")]
    at: std::time::Instant,
}

impl PublishTimer {
    /// Registers the histogram with the current recorder.
    pub(crate) fn new() -> Self {
        PublishTimer {
            #[cfg(feature = "metrics")]
            histogram: metrics::histogram!(super::names::BACKPLANE_PUBLISH),
        }
    }

    /// A publish starts now.
    #[inline]
    pub(crate) fn start(&self) -> Started {
        Started {
            #[cfg(feature = "metrics")]
            at: std::time::Instant::now(),
        }
    }

    /// The publish that began at `started` completed.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    #[inline]
    pub(crate) fn done(&self, started: Started) {
        #[cfg(feature = "metrics")]
        self.histogram.record(started.at.elapsed());
    }
}
