//! The store's Prometheus metrics, registered in a registry handed in (no
//! global registry). With the node's registry (prefix `chaperone`) the
//! names are `chaperone_recorder_*`. No label carries a lesson, user or
//! participant id: there are no labels at all.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Histogram buckets for one durable put, in seconds (1 ms to 60 s).
const PUT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Spool, upload and store-health metrics of the ingest side.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    /// Bytes held in the spool (files on disk, trailers included).
    pub spool_bytes: IntGauge,
    /// Objects waiting in the spool for the backfill.
    pub spool_objects: IntGauge,
    /// Spooled objects set aside because the store already held other
    /// bytes at their path (never overwritten; an operator must look).
    pub spool_conflicts: IntGauge,
    /// Failed store writes: a put that had to be spooled, or a backfill
    /// attempt that failed.
    pub upload_errors: IntCounter,
    /// 1 while the store takes writes, 0 while it fails.
    pub store_up: IntGauge,
    /// One durable put (in the store or in the spool), in seconds.
    pub put_seconds: Histogram,
}

impl StoreMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        registry.register(Box::new(m.spool_objects.clone()))?;
        registry.register(Box::new(m.spool_conflicts.clone()))?;
        registry.register(Box::new(m.upload_errors.clone()))?;
        registry.register(Box::new(m.store_up.clone()))?;
        registry.register(Box::new(m.put_seconds.clone()))?;
        Ok(m)
    }

    /// The metrics without a registry (tools that serve no `/metrics`).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            spool_bytes: IntGauge::new(
                "recorder_spool_bytes",
                "Bytes held in the recorder's local spool while the object store is down or catching up",
            )?,
            spool_objects: IntGauge::new(
                "recorder_spool_objects",
                "Objects in the recorder's local spool waiting to be backfilled to the object store",
            )?,
            spool_conflicts: IntGauge::new(
                "recorder_spool_conflicts",
                "Spooled objects set aside because the store holds other bytes at their path (never overwritten)",
            )?,
            upload_errors: IntCounter::new(
                "recorder_upload_errors_total",
                "Object store writes that failed (spooled instead, or a failed backfill attempt)",
            )?,
            store_up: IntGauge::new(
                "recorder_store_up",
                "1 while the object store takes writes, 0 while they fail",
            )?,
            put_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "recorder_put_seconds",
                    "Time for one durable put, in the object store or the spool",
                )
                .buckets(PUT_BUCKETS.to_vec()),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_under_the_node_prefix() {
        let registry =
            Registry::new_custom(Some("chaperone".to_owned()), None).expect("valid prefix");
        let m = StoreMetrics::register(&registry).expect("registers once");
        m.store_up.set(1);
        m.put_seconds.observe(0.01);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for want in [
            "chaperone_recorder_spool_bytes",
            "chaperone_recorder_spool_objects",
            "chaperone_recorder_spool_conflicts",
            "chaperone_recorder_upload_errors_total",
            "chaperone_recorder_store_up",
            "chaperone_recorder_put_seconds",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing in {names:?}"
            );
        }
        assert!(StoreMetrics::register(&registry).is_err(), "no duplicates");
    }
}
