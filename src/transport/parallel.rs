//! Many hosts at once: [`pool`] is the one bounded worker pool; [`run_parallel`] runs a job per
//! host on it, reports progress as [`Event`]s on an mpsc channel, and never lets one failed,
//! slow or unreachable host stop the others; [`Summary`] sums the outcomes. Drawing the events
//! is src/output's job.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::error::TransportError;
use super::target::Target;

pub use crate::event::{Event, EventKind};

/// Handed to each job to report what it is doing.
pub struct Reporter {
    host: String,
    tx: Option<Sender<Event>>,
}

impl Reporter {
    pub fn step(&self, message: impl Into<String>) {
        self.send(EventKind::Step(message.into()));
    }
    fn send(&self, kind: EventKind) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Event {
                host: self.host.clone(),
                kind,
            });
        }
    }
}

/// Something run_parallel can label in messages.
pub trait Named {
    fn name(&self) -> String;
    fn address(&self) -> String;
}

impl Named for Target {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn address(&self) -> String {
        Target::address(self)
    }
}

#[derive(Debug)]
pub struct HostOutcome<T> {
    pub name: String,
    pub address: String,
    pub elapsed: Duration,
    pub result: Result<T, TransportError>,
}

/// Run `job` for every item on at most `parallel` threads (at least 1). Results come back in
/// the order of `items`. A job that panics is reported as failed; the others carry on.
/// Events: Started, the job's steps, then Done (with `done_message`) or Failed (with the cause).
pub fn run_parallel<I, T, F>(
    items: &[I],
    parallel: usize,
    events: Option<Sender<Event>>,
    job: F,
) -> Vec<HostOutcome<T>>
where
    I: Named + Sync,
    T: Send,
    F: Fn(&I, &Reporter) -> Result<T, TransportError> + Sync,
{
    pool(items, parallel, |item| {
        let reporter = Reporter {
            host: item.name(),
            tx: events.clone(),
        };
        reporter.send(EventKind::Started);
        let start = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| job(item, &reporter)))
            .unwrap_or_else(|_| {
                Err(TransportError::Other {
                    host: item.name(),
                    detail: "internal error (panic)".into(),
                })
            });
        match &result {
            Ok(_) => reporter.send(EventKind::Done("done".into())),
            Err(e) => reporter.send(EventKind::Failed(e.to_string())),
        }
        HostOutcome {
            name: item.name(),
            address: item.address(),
            elapsed: start.elapsed(),
            result,
        }
    })
}

/// The one bounded worker pool: `job` for every item on at most `parallel` threads (at least
/// 1), results in the order of `items`. A job must not panic ([`pool_or`] is for jobs that may).
pub fn pool<I, T, F>(items: &[I], parallel: usize, job: F) -> Vec<T>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> T + Sync,
{
    let next = AtomicUsize::new(0);
    let workers = parallel.max(1).min(items.len().max(1));
    let mut slots: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    let done: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (next, job) = (&next, &job);
                s.spawn(move || {
                    let mut mine = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, job(item)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, o) in done.into_iter().flatten() {
        slots[i] = Some(o);
    }
    slots.into_iter().flatten().collect()
}

/// [`pool`] for jobs that may panic: a job that panics is answered by `panicked(item)` in its
/// place; the others carry on.
pub fn pool_or<I, T, F, P>(items: &[I], parallel: usize, job: F, panicked: P) -> Vec<T>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> T + Sync,
    P: Fn(&I) -> T + Sync,
{
    pool(items, parallel, |item| std::panic::catch_unwind(AssertUnwindSafe(|| job(item))).unwrap_or_else(|_| panicked(item)))
}

/// Totals of a parallel run, printable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub ok: Vec<String>,
    /// (name, address, cause)
    pub failed: Vec<(String, String, String)>,
}

impl Summary {
    pub fn of<T>(outcomes: &[HostOutcome<T>]) -> Summary {
        let mut s = Summary {
            ok: vec![],
            failed: vec![],
        };
        for o in outcomes {
            match &o.result {
                Ok(_) => s.ok.push(o.name.clone()),
                Err(e) => s
                    .failed
                    .push((o.name.clone(), o.address.clone(), e.to_string())),
            }
        }
        s
    }
    pub fn all_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} host(s) ok, {} failed",
            self.ok.len(),
            self.failed.len()
        )?;
        for (name, address, cause) in &self.failed {
            write!(f, "\n  {name} ({address}): {cause}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(&'static str, u64);
    impl Named for Item {
        fn name(&self) -> String {
            self.0.into()
        }
        fn address(&self) -> String {
            format!("addr-{}", self.0)
        }
    }

    #[test]
    fn bounded_ordered_failures_isolated() {
        let items = [
            Item("a", 30),
            Item("b", 0),
            Item("c", 10),
            Item("d", 0),
            Item("e", 5),
        ];
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel();
        let out = run_parallel(&items, 2, Some(tx), |it, r| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            r.step("working");
            std::thread::sleep(Duration::from_millis(it.1));
            running.fetch_sub(1, Ordering::SeqCst);
            match it.0 {
                "b" => Err(TransportError::Other {
                    host: "b".into(),
                    detail: "boom".into(),
                }),
                "d" => panic!("job bug"),
                _ => Ok(it.0.len()),
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let names: Vec<_> = out.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert!(out[0].result.is_ok() && out[2].result.is_ok() && out[4].result.is_ok());
        assert!(out[1].result.is_err() && out[3].result.is_err());
        let s = Summary::of(&out);
        assert_eq!(s.ok, ["a", "c", "e"]);
        assert_eq!(s.failed[0], ("b".into(), "addr-b".into(), "b: boom".into()));
        assert!(
            s.to_string()
                .starts_with("3 host(s) ok, 2 failed\n  b (addr-b): b: boom")
        );
        let evs: Vec<Event> = rx.iter().collect();
        assert_eq!(
            evs.iter().filter(|e| e.kind == EventKind::Started).count(),
            5
        );
        assert!(evs.contains(&Event {
            host: "b".into(),
            kind: EventKind::Failed("b: boom".into())
        }));
        assert!(evs.contains(&Event {
            host: "a".into(),
            kind: EventKind::Done("done".into())
        }));
    }

    /// A free worker takes the next item without waiting for the others (no batches): with two
    /// workers, `c` runs while `a` is still busy, and `a` waits for exactly that. In batches of
    /// two, `c` would only start after `a`, whose wait would then give up (after a minute).
    #[test]
    fn a_free_worker_takes_the_next_item_while_another_is_busy() {
        let (tx, rx) = std::sync::mpsc::channel::<&str>();
        let rx = std::sync::Mutex::new(rx);
        let out = pool(&["a", "b", "c"], 2, |&it| match it {
            "a" => rx.lock().unwrap().recv_timeout(Duration::from_secs(60)).map(|got| format!("a saw {got}")).unwrap_or_else(|_| "a gave up".into()),
            other => {
                if other == "c" {
                    tx.send("c").unwrap();
                }
                other.to_string()
            }
        });
        assert_eq!(out, ["a saw c", "b", "c"]);
    }

    #[test]
    fn a_panicking_job_is_answered_in_its_place() {
        let out = pool_or(&[1, 2, 3], 2, |&i| if i == 2 { panic!("job bug") } else { i.to_string() }, |&i| format!("panicked {i}"));
        assert_eq!(out, ["1", "panicked 2", "3"]);
    }

    #[test]
    fn zero_parallel_means_one_and_empty_is_fine() {
        let out = run_parallel(&[Item("x", 0)], 0, None, |_, _| Ok(1));
        assert_eq!(out.len(), 1);
        let none: [Item; 0] = [];
        assert!(run_parallel(&none, 4, None, |_, _| Ok(1)).is_empty());
    }
}
