//! The options object of `open()`, as JSON from `index.js`, into [`StoreOptions`].

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use statesafe::{
    BackupPolicy, Durability, Event, Format, HistoryPolicy, Layout, RecoveryPolicy, Store,
    StoreOptions,
};

use crate::convert::{Doc, TextLayout};
use crate::error::Failure;
use crate::run::Outcome;

/// The options `index.js` passes on (functions such as `validate` stay in JavaScript).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Options {
    #[serde(default)]
    default: Option<Value>,
    /// The places of `default`'s BigInts, as `index.js` lists them for a document
    /// (`[tokens, digits]` as JSON text; the places hold the digits as strings).
    #[serde(default)]
    default_big: Option<String>,
    lock_timeout_ms: Option<u64>,
    durability: Option<String>,
    backups: Option<Backups>,
    history: Option<History>,
    schema: Option<Value>,
    max_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    format: Option<String>,
    layout: Option<String>,
    private: Option<bool>,
    recovery: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Backups {
    Keep(u32),
    Policy {
        #[serde(default)]
        keep: u32,
        #[serde(default)]
        hourly: u32,
        #[serde(default)]
        daily: u32,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum History {
    Keep(u32),
    #[serde(rename_all = "camelCase")]
    Policy {
        keep: Option<u32>,
        max_patch_bytes: Option<u64>,
    },
}

/// Events the library reported, waiting for `index.js` to emit them.
pub(crate) type EventQueue = Arc<Mutex<Vec<Event>>>;

fn bad(option: &str, value: &str, allowed: &str) -> Failure {
    Failure::option_error(format!(
        "statesafe: option `{option}` is {value:?}; it must be one of {allowed}"
    ))
}

impl Options {
    pub fn parse(json: &str) -> Outcome<Options> {
        serde_json::from_str(json)
            .map_err(|e| Failure::option_error(format!("statesafe: bad options: {e}")))
    }

    /// How documents are laid out in the file; `recorded` is the format recorded
    /// with the file (the option overrides it).
    pub fn text_layout(&self, recorded: Format) -> TextLayout {
        let sealed = match self.format.as_deref() {
            Some(f) => f == "sealed",
            None => recorded == Format::Sealed,
        };
        match (self.layout.as_deref(), sealed) {
            (Some("compact"), _) => TextLayout::Compact,
            (_, true) => TextLayout::PrettySealed,
            _ => TextLayout::Pretty,
        }
    }

    /// The `default` document, as text in `layout`.
    pub fn default(&self, layout: TextLayout) -> Outcome<Option<Doc>> {
        self.default
            .as_ref()
            .map(|v| {
                let text = if layout.indented() {
                    serde_json::to_string_pretty(v)
                } else {
                    serde_json::to_string(v)
                }
                .expect("invariant: a Value always serializes");
                let big = self.default_big.as_deref().unwrap_or("");
                crate::convert::document(text, big, true, layout).map(|(doc, _)| doc)
            })
            .transpose()
    }

    /// The library options; `events` receives what the store reports.
    pub fn store_options(&self, events: EventQueue) -> Outcome<StoreOptions<Doc>> {
        let mut o = Store::<Doc>::options().on_event(move |e| events.lock().push(e.clone()));
        if let Some(ms) = self.lock_timeout_ms {
            o = o.lock_timeout(Duration::from_millis(ms));
        }
        if let Some(d) = &self.durability {
            o = o.durability(match d.as_str() {
                "full" => Durability::Full,
                "none" => Durability::None,
                other => return Err(bad("durability", other, "'full', 'none'")),
            });
        }
        if let Some(b) = &self.backups {
            o = o.backups(match *b {
                Backups::Keep(keep) => BackupPolicy {
                    keep,
                    ..BackupPolicy::default()
                },
                Backups::Policy {
                    keep,
                    hourly,
                    daily,
                } => BackupPolicy {
                    keep,
                    hourly,
                    daily,
                },
            });
        }
        if let Some(h) = &self.history {
            let d = HistoryPolicy::default();
            o = o.history(match *h {
                History::Keep(keep) => HistoryPolicy { keep, ..d },
                History::Policy {
                    keep,
                    max_patch_bytes,
                } => HistoryPolicy {
                    keep: keep.unwrap_or(d.keep),
                    max_patch_bytes: max_patch_bytes.unwrap_or(d.max_patch_bytes),
                },
            });
        }
        if let Some(s) = &self.schema {
            o = o.schema(s.clone());
        }
        if let Some(n) = self.max_bytes {
            o = o.max_bytes(n);
        }
        if let Some(n) = self.min_free_bytes {
            o = o.min_free_bytes(n);
        }
        if let Some(f) = &self.format {
            o = o.format(match f.as_str() {
                "plain" => Format::Plain,
                "sealed" => Format::Sealed,
                other => return Err(bad("format", other, "'plain', 'sealed'")),
            });
        }
        if let Some(l) = &self.layout {
            o = o.layout(match l.as_str() {
                "pretty" => Layout::Pretty,
                "compact" => Layout::Compact,
                other => return Err(bad("layout", other, "'pretty', 'compact'")),
            });
        }
        if let Some(p) = self.private {
            o = o.private(p);
        }
        if let Some(r) = &self.recovery {
            o = o.recovery(match r.as_str() {
                "restore" => RecoveryPolicy::RestoreFromBackup,
                "fail" => RecoveryPolicy::Fail,
                other => return Err(bad("recovery", other, "'restore', 'fail'")),
            });
        }
        Ok(o)
    }
}
