//! Small helpers shared by the services.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, distr::Alphanumeric};

/// Milliseconds since the Unix epoch, the unit Matrix uses for timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random string of ASCII letters and digits, from the OS-seeded thread RNG.
pub fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random device id: upper-case letters, as Synapse makes them.
pub fn random_device_id() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| rng.random_range(b'A'..=b'Z') as char)
        .collect()
}

/// Locks a mutex, also after a thread panicked while holding it: the data
/// behind each of the server's mutexes stays usable (maps and counters
/// whose every update is a single step), and one failed request must not
/// take every later one down with it.
pub fn locked<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `work` on every item on the blocking thread pool, a share of the
/// items per core, and returns the results in the items' order (checking
/// the signatures of a join's thousands of events).
pub async fn parallel_map<T, R, F>(items: Vec<T>, work: F) -> crate::Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> R + Send + Sync + 'static,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = items.len().div_ceil(cores).max(1);
    let work = std::sync::Arc::new(work);
    let mut items = items.into_iter();
    let mut tasks = Vec::new();
    loop {
        let part: Vec<T> = items.by_ref().take(share).collect();
        if part.is_empty() {
            break;
        }
        let work = work.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            part.into_iter().map(|item| work(item)).collect::<Vec<R>>()
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.map_err(crate::Error::internal)?);
    }
    Ok(results)
}

/// Runs futures concurrently on the current task and collects their
/// outputs in order (requests to several servers at once).
pub async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// A map that holds at most `capacity` entries and forgets the oldest
/// inserted first (loaded states, event texts, auth events).
pub struct BoundedCache<V> {
    capacity: usize,
    map: std::collections::HashMap<u64, V>,
    order: std::collections::VecDeque<u64>,
}

impl<V: Clone> BoundedCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: std::collections::HashMap::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    pub fn get(&self, id: u64) -> Option<V> {
        self.map.get(&id).cloned()
    }

    /// Forgets an entry (its place in the order goes when it comes up).
    pub fn remove(&mut self, id: u64) {
        self.map.remove(&id);
    }

    pub fn insert(&mut self, id: u64, value: V) {
        if self.map.insert(id, value).is_none() {
            self.order.push_back(id);
        }
        while self.map.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Makes ring the process's rustls provider, once; later calls do nothing.
/// reqwest and rustls builders need one, and every TLS client and server
/// here is built after this.
pub fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
