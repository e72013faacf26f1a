//! The library's `tracing` warnings, sent to Python's `logging` (logger `statesafe`).
//!
//! A minimal subscriber: only events at warn level or above from the library's own
//! targets; spans are not tracked (the library opens none).

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

struct ToPythonLogging;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl Subscriber for ToPythonLogging {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN && metadata.target().starts_with("statesafe")
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let method = if *event.metadata().level() == Level::ERROR {
            "error"
        } else {
            "warning"
        };
        // Events can come from threads without the GIL (or after shutdown began).
        let _ = Python::try_attach(|py| {
            let logged = py
                .import("logging")
                .and_then(|l| l.call_method1("getLogger", ("statesafe",)))
                .and_then(|logger| logger.call_method1(method, ("%s", message.0)));
            if let Err(e) = logged {
                e.write_unraisable(py, None);
            }
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Installs the bridge as the process's `tracing` subscriber, unless the embedding
/// program installed its own first.
pub fn install() {
    let _ = tracing::subscriber::set_global_default(ToPythonLogging);
}
