//! Drawing the event stream (src/event): one line per host with a spinner on a terminal
//! (indicatif), plain `[host] ...` lines otherwise, nothing with -q; image pushes as one line per
//! image actually sent. The only place progress is printed.

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::event::{Event, EventKind};
use crate::registry::push::{BlobState, PushEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    Auto,
    Plain,
    Quiet,
}

/// Draw events on stderr until every sender is dropped. Returns the drawing thread; join it
/// after the run (drop your Sender first).
pub fn render_progress(
    rx: Receiver<Event>,
    hosts: Vec<String>,
    mode: ProgressMode,
) -> JoinHandle<()> {
    let fancy = mode == ProgressMode::Auto && console::Term::stderr().is_term();
    if fancy {
        std::thread::spawn(move || render_fancy(rx, hosts))
    } else {
        render_plain(rx, mode, Box::new(std::io::stderr()))
    }
}

/// Plain lines (one per event) to any writer; `Quiet` drains the events silently.
pub fn render_plain(
    rx: Receiver<Event>,
    mode: ProgressMode,
    mut out: Box<dyn std::io::Write + Send>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for ev in rx {
            if mode != ProgressMode::Quiet
                && let Some(line) = plain_line(&ev)
            {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    })
}

fn render_fancy(rx: Receiver<Event>, hosts: Vec<String>) {
    let mp = indicatif::MultiProgress::new();
    let style = indicatif::ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let width = hosts.iter().map(|h| h.len()).max().unwrap_or(0);
    let bars: std::collections::HashMap<String, indicatif::ProgressBar> = hosts
        .iter()
        .map(|h| {
            let pb = mp.add(indicatif::ProgressBar::new_spinner());
            pb.set_style(style.clone());
            pb.set_prefix(format!("{h:width$}"));
            pb.set_message("waiting");
            pb.enable_steady_tick(Duration::from_millis(120));
            (h.clone(), pb)
        })
        .collect();
    for ev in rx {
        let pb = match (&ev.kind, bars.get(&ev.host)) {
            (EventKind::Push(_), _) | (_, None) => {
                if let Some(line) = plain_line(&ev) {
                    let _ = mp.println(line);
                }
                continue;
            }
            (_, Some(pb)) => pb,
        };
        match ev.kind {
            EventKind::Started => pb.set_message("connecting"),
            EventKind::Step(m) => pb.set_message(m),
            EventKind::Done(m) => {
                pb.finish_with_message(format!("{} {m}", console::style("ok").green()))
            }
            EventKind::Failed(m) => {
                pb.finish_with_message(format!("{} {m}", console::style("FAILED").red()))
            }
            EventKind::Note(m) => {
                let _ = mp.println(format!("{}: {m}", ev.host));
            }
            EventKind::Push(_) => {}
        }
    }
    for pb in bars.values() {
        if !pb.is_finished() {
            pb.finish();
        }
    }
}

/// One event as a plain log line; `None` for push progress nobody needs to read (per-blob
/// byte counts, blobs already present): images actually pushed and retries are shown.
pub fn plain_line(ev: &Event) -> Option<String> {
    Some(match &ev.kind {
        EventKind::Started => format!("[{}] started", ev.host),
        EventKind::Step(m) => format!("[{}] {m}", ev.host),
        EventKind::Done(m) => format!("[{}] ok: {m}", ev.host),
        EventKind::Failed(m) => format!("[{}] FAILED: {m}", ev.host),
        EventKind::Note(m) => format!("[{}] {m}", ev.host),
        EventKind::Push(p) => match p {
            PushEvent::ManifestPushed { image, digest } => format!("  pushed {image} ({digest})"),
            PushEvent::Blob { state: BlobState::Retrying { .. }, .. } => format!("  {p}"),
            _ => return None,
        },
    })
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Named, TransportError, run_parallel};

    struct Item(&'static str);
    impl Named for Item {
        fn name(&self) -> String {
            self.0.into()
        }
        fn address(&self) -> String {
            format!("addr-{}", self.0)
        }
    }

    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_renderer_writes_one_line_per_event() {
        let buf = Shared::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = render_plain(rx, ProgressMode::Plain, Box::new(buf.clone()));
        let items = [Item("a"), Item("b")];
        run_parallel(&items, 1, Some(tx), |it, r| {
            r.step("gathering facts");
            if it.0 == "b" {
                Err(TransportError::Other {
                    host: "b".into(),
                    detail: "down".into(),
                })
            } else {
                Ok(())
            }
        });
        t.join().unwrap();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "[a] started\n[a] gathering facts\n[a] ok: done\n[b] started\n[b] gathering facts\n[b] FAILED: b: down\n"
        );
    }

    #[test]
    fn quiet_renderer_prints_nothing() {
        let buf = Shared::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = render_plain(rx, ProgressMode::Quiet, Box::new(buf.clone()));
        tx.send(Event {
            host: "a".into(),
            kind: EventKind::Started,
        })
        .unwrap();
        drop(tx);
        t.join().unwrap();
        assert!(buf.0.lock().unwrap().is_empty());
    }

    #[test]
    fn plain_lines() {
        let ev = Event {
            host: "b1".into(),
            kind: EventKind::Failed("x".into()),
        };
        assert_eq!(plain_line(&ev).unwrap(), "[b1] FAILED: x");
        let pushed = Event {
            host: "mac".into(),
            kind: EventKind::Push(PushEvent::ManifestPushed { image: "a:1".into(), digest: "sha256:x".into() }),
        };
        assert_eq!(plain_line(&pushed).unwrap(), "  pushed a:1 (sha256:x)");
        let quiet = Event {
            host: "mac".into(),
            kind: EventKind::Push(PushEvent::ManifestPresent { image: "a:1".into(), digest: "sha256:x".into() }),
        };
        assert_eq!(plain_line(&quiet), None);
    }
}
