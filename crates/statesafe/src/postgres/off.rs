//! Without the `postgres` feature: a remote store cannot be opened, so these types
//! have no values and every branch on them is dead code the compiler removes.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backup::BackupList;
use crate::error::{Error, Result};
use crate::history::HistoryEntry;
use crate::lock::Holder;
use crate::recover::{CheckReport, Info};
use crate::settings::Settings;
use crate::store::{Snapshot, Store};

/// No remote store exists in this build.
pub(crate) enum Remote {}

/// No remote transaction exists in this build.
pub(crate) enum Tx<'s> {
    #[allow(dead_code)]
    Never(std::convert::Infallible, std::marker::PhantomData<&'s ()>),
}

/// No remote lock exists in this build.
pub(crate) enum Held<'r> {
    #[allow(dead_code)]
    Never(std::convert::Infallible, std::marker::PhantomData<&'r ()>),
}

impl Held<'_> {
    pub(crate) fn nested_env(&self) -> (&'static str, String) {
        match *self {
            Held::Never(never, _) => match never {},
        }
    }
    pub(crate) fn check(&self) -> Result<()> {
        match *self {
            Held::Never(never, _) => match never {},
        }
    }
}

impl Remote {
    pub(crate) fn hold<T>(&self, _store: &Store<T>, _operation: &str) -> Result<Held<'_>> {
        match *self {}
    }
    pub(crate) fn open(url: &str) -> Result<(Remote, Settings)> {
        Err(Error::Unsupported {
            path: PathBuf::from(super::address_redacted(url)),
            what: "a PostgreSQL state".into(),
            why: "in this build: it was built without the `postgres` feature".into(),
        })
    }
    pub(crate) fn quarantine_settings(
        url: &str,
        _lock_timeout: std::time::Duration,
    ) -> Result<Option<PathBuf>> {
        Self::open(url).map(|_| None)
    }
    pub(crate) fn display(&self) -> &Path {
        match *self {}
    }
    pub(crate) fn lock_holder(&self) -> Option<Holder> {
        match *self {}
    }
    pub(crate) fn load<T>(&self, _store: &Store<T>) -> Result<Snapshot<T>> {
        match *self {}
    }
    pub(crate) fn generation<T>(&self, _store: &Store<T>) -> Result<u64> {
        match *self {}
    }
    pub(crate) fn recover<T>(&self, _store: &Store<T>) -> Result<Option<crate::Event>> {
        match *self {}
    }
    pub(crate) fn begin<T>(
        &self,
        _store: &Store<T>,
        _operation: &str,
        _init: Option<impl FnOnce() -> T>,
    ) -> Result<(Tx<'_>, T)> {
        match *self {}
    }
    pub(crate) fn replace<T>(
        &self,
        _store: &Store<T>,
        _expected: Option<u64>,
        _state: &T,
        _operation: &str,
    ) -> Result<u64> {
        match *self {}
    }
    pub(crate) fn create_with<T>(
        &self,
        _store: &Store<T>,
        _settings: &Settings,
        _state: &T,
    ) -> Result<u64> {
        match *self {}
    }
    pub(crate) fn save_settings<T>(&self, _store: &Store<T>, _settings: &Settings) -> Result<()> {
        match *self {}
    }
    pub(crate) fn restore<T>(&self, _store: &Store<T>, _generation: u64) -> Result<u64> {
        match *self {}
    }
    pub(crate) fn backups<T>(&self, _store: &Store<T>) -> Result<BackupList> {
        match *self {}
    }
    pub(crate) fn history<T>(&self, _store: &Store<T>) -> Result<Vec<HistoryEntry>> {
        match *self {}
    }
    pub(crate) fn document_at<T>(&self, _store: &Store<T>, _generation: u64) -> Result<Value> {
        match *self {}
    }
    pub(crate) fn check<T>(&self, _store: &Store<T>) -> Result<CheckReport> {
        match *self {}
    }
    pub(crate) fn info<T>(&self, _store: &Store<T>) -> Result<Info> {
        match *self {}
    }
}

impl Tx<'_> {
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Tx::Never(n, _) => match *n {},
        }
    }
    pub(crate) fn existed(&self) -> bool {
        match self {
            Tx::Never(n, _) => match *n {},
        }
    }
    pub(crate) fn commit<T: Serialize + DeserializeOwned>(
        self,
        _store: &Store<T>,
        _state: &T,
    ) -> Result<u64> {
        match self {
            Tx::Never(n, _) => match n {},
        }
    }
}
