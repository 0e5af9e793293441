//! What `/metrics` shows: counters kept as things happen (requests,
//! events, federation failures) and values read at scrape time (queue
//! depths, sync waiters, database size and cache, process memory and CPU).
//! Each server's registry lives in its `Services`: no global state.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{Services, tables, utils};

/// A route as the router matched it (`/_matrix/client/v3/rooms/{room_id}/send/...`):
/// one label per route, never one per room or user.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Endpoint(pub Arc<str>);

impl EncodeLabelValue for Endpoint {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: Endpoint,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    endpoint: Endpoint,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabels {
    origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 33 s: a long-polling /sync lands in the top buckets.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    events: Family<OriginLabels, Counter>,
    federation_failures: Family<DestinationLabels, Counter>,
    // Read at scrape time.
    federation_queued: Family<DestinationLabels, Gauge>,
    sync_waiters: Gauge,
    database_bytes: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    resident_bytes: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    /// One scrape at a time: scrape-time counters move by differences.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("conduit");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time taken to answer, by route and method",
            Unit::Seconds,
            latency.clone(),
        );
        let events = Family::<OriginLabels, Counter>::default();
        registry.register(
            "events",
            "Events added to room timelines: sent here (local) or received over federation (remote)",
            events.clone(),
        );
        let federation_failures = Family::<DestinationLabels, Counter>::default();
        registry.register(
            "federation_transaction_failures",
            "Transactions another server did not take, by destination",
            federation_failures.clone(),
        );
        let federation_queued = Family::<DestinationLabels, Gauge>::default();
        registry.register(
            "federation_queued_events",
            "Events waiting to be sent, by destination",
            federation_queued.clone(),
        );
        let sync_waiters = Gauge::default();
        registry.register(
            "sync_waiters",
            "Clients waiting in a long-polling sync",
            sync_waiters.clone(),
        );
        let database_bytes = Gauge::default();
        registry.register_with_unit(
            "database_size",
            "RocksDB files and memtables",
            Unit::Bytes,
            database_bytes.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "database_block_cache_hits",
            "RocksDB block cache hits",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "database_block_cache_misses",
            "RocksDB block cache misses (reads from disk)",
            cache_misses.clone(),
        );
        let resident_bytes = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident set size of the process",
            Unit::Bytes,
            resident_bytes.clone(),
        );
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time of the process",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            events,
            federation_failures,
            federation_queued,
            sync_waiters,
            database_bytes,
            cache_hits,
            cache_misses,
            resident_bytes,
            cpu_seconds,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// One answered request. `method` is the verb for the standard ones
    /// and "other" for the rest, so a client cannot grow the label set.
    pub fn request(&self, endpoint: Endpoint, method: &'static str, status: u16, took: Duration) {
        self.latency
            .get_or_create(&LatencyLabels {
                endpoint: endpoint.clone(),
                method,
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                method,
                status,
            })
            .inc();
    }

    /// An event added to a timeline: sent by a local user, or received.
    pub(crate) fn event(&self, local: bool) {
        let origin = if local { "local" } else { "remote" };
        self.events.get_or_create(&OriginLabels { origin }).inc();
    }

    pub(crate) fn federation_failure(&self, destination: &str) {
        self.federation_failures
            .get_or_create(&DestinationLabels {
                destination: destination.to_owned(),
            })
            .inc();
    }
}

/// Moves a counter mirrored from elsewhere up to `value`.
fn mirror(counter: &Counter, value: u64) {
    counter.inc_by(value.saturating_sub(counter.get()));
}

/// The process's resident bytes and CPU seconds, from `/proc/self`.
fn process_usage() -> Option<(u64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces; utime and stime are the 14th and 15th fields overall.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Clock ticks are USER_HZ, 100 per second in Linux's user-space ABI.
    Some((rss_kib * 1024, (utime + stime) as f64 / 100.0))
}

impl Services {
    /// Whether the server can take requests: not stopping, and its
    /// database answers a read. The reason when not.
    pub fn ready(&self) -> Result<(), String> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err("the server is shutting down".into());
        }
        self.db
            .get(&tables::GLOBAL_JSON, "health")
            .map(|_| ())
            .map_err(|e| format!("the database does not answer: {e}"))
    }

    /// The metrics in the OpenMetrics text format, with the scrape-time
    /// values read now.
    pub fn metrics_text(&self) -> Result<String, std::fmt::Error> {
        let metrics = &self.metrics;
        let _one_scrape = utils::locked(&metrics.scrape);
        metrics.sync_waiters.set(self.stream.waiters() as i64);
        match self.federation_queue_depths() {
            Ok(depths) => {
                metrics.federation_queued.clear();
                for (destination, queued) in depths {
                    metrics
                        .federation_queued
                        .get_or_create(&DestinationLabels { destination })
                        .set(queued as i64);
                }
            }
            Err(e) => tracing::warn!("metrics: cannot read the federation queue: {e}"),
        }
        match self.db.size_bytes() {
            Ok(bytes) => {
                metrics.database_bytes.set(bytes as i64);
            }
            Err(e) => tracing::warn!("metrics: cannot read the database size: {e}"),
        }
        let (hits, misses) = self.db.block_cache_hits_misses();
        mirror(&metrics.cache_hits, hits);
        mirror(&metrics.cache_misses, misses);
        if let Some((rss, cpu)) = process_usage() {
            metrics.resident_bytes.set(rss as i64);
            let before = metrics.cpu_seconds.get();
            if cpu > before {
                metrics.cpu_seconds.inc_by(cpu - before);
            }
        }
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry)?;
        Ok(text)
    }

    /// Queued events per destination, from the queue table.
    fn federation_queue_depths(&self) -> crate::Result<BTreeMap<String, u64>> {
        let mut depths = BTreeMap::new();
        for row in self.db.scan_prefix(
            &tables::FEDERATION_QUEUE,
            &conduit_storage::KeyPrefix::new(),
        )? {
            let ((destination, _), _) = row?;
            *depths.entry(destination).or_insert(0) += 1;
        }
        Ok(depths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_usage_reads_proc() {
        let (rss, cpu) = process_usage().expect("/proc/self is readable on Linux");
        assert!(
            rss > 1024 * 1024,
            "a test process uses more than 1 MiB: {rss}"
        );
        assert!(cpu >= 0.0);
    }

    #[test]
    fn requests_show_in_the_text_by_route_and_status() {
        let metrics = Metrics::default();
        let route = Endpoint("/_matrix/client/versions".into());
        metrics.request(route.clone(), "GET", 200, Duration::from_millis(3));
        metrics.request(route, "GET", 200, Duration::from_millis(5));
        metrics.event(true);
        metrics.federation_failure("down.example");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(
            text.contains(
                r#"conduit_http_requests_total{endpoint="/_matrix/client/versions",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"conduit_http_request_duration_seconds_count{endpoint="/_matrix/client/versions",method="GET"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conduit_events_total{origin="local"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"conduit_federation_transaction_failures_total{destination="down.example"} 1"#
            ),
            "{text}"
        );
    }
}
