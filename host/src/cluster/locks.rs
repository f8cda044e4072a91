//! The lock hashes the cluster accepts: the key `locks` of the cluster
//! bucket, a JSON list changed only by compare-and-set, so two writers
//! never lose each other's change. A host whose lock hash is not in the
//! list takes no messages.

use super::ClusterError;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use serde::{Deserialize, Serialize};

/// The key of the accepted hashes in the cluster bucket.
pub(crate) const LOCKS_KEY: &str = "locks";

/// How many times a change is tried again after another writer's change.
const ATTEMPTS: usize = 16;

/// The value of the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Accepted {
    accepted: Vec<String>,
}

/// The accepted hashes, and the revision they were read at (`None`: the
/// key does not exist).
async fn read(store: &Store, url: &str) -> Result<(Vec<String>, Option<u64>), ClusterError> {
    let entry = store
        .entry(LOCKS_KEY)
        .await
        .map_err(|cause| failure(store, url, "reading", cause.to_string()))?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let value: Accepted = serde_json::from_slice(&entry.value).map_err(|cause| {
                failure(
                    store,
                    url,
                    "reading",
                    format!("not a list of hashes: {cause}"),
                )
            })?;
            Ok((value.accepted, Some(entry.revision)))
        }
        Some(entry) => Ok((Vec::new(), Some(entry.revision))),
        None => Ok((Vec::new(), None)),
    }
}

/// The accepted hashes (none when the key is missing).
pub(crate) async fn accepted(store: &Store, url: &str) -> Result<Vec<String>, ClusterError> {
    Ok(read(store, url).await?.0)
}

/// The accepted hashes; when the key is missing, it is created holding
/// `own` (created, not put: of two first hosts racing, one wins and the
/// other reads its list).
pub(crate) async fn accepted_or_first(
    store: &Store,
    url: &str,
    own: &str,
) -> Result<Vec<String>, ClusterError> {
    let (list, revision) = read(store, url).await?;
    if revision.is_some() {
        return Ok(list);
    }
    let first = vec![own.to_string()];
    match store.create(LOCKS_KEY, encode(&first).into()).await {
        Ok(_) => {
            tracing::info!(
                lock = own,
                "first host of the cluster: its lock hash is the accepted one"
            );
            Ok(first)
        }
        Err(error) if error.kind() == CreateErrorKind::AlreadyExists => accepted(store, url).await,
        Err(error) => Err(failure(store, url, "creating", error.to_string())),
    }
}

/// Adds `hash` to the accepted hashes; whether it was not there yet.
pub(crate) async fn accept(store: &Store, url: &str, hash: &str) -> Result<bool, ClusterError> {
    change(store, url, |list| {
        if list.iter().any(|h| h == hash) {
            return false;
        }
        list.push(hash.to_string());
        true
    })
    .await
}

/// Removes `hash` from the accepted hashes; whether it was there.
pub(crate) async fn retire(store: &Store, url: &str, hash: &str) -> Result<bool, ClusterError> {
    change(store, url, |list| {
        let before = list.len();
        list.retain(|h| h != hash);
        list.len() != before
    })
    .await
}

/// Applies `edit` to the list by compare-and-set, again after another
/// writer's change; `edit` says whether it changed anything.
async fn change(
    store: &Store,
    url: &str,
    edit: impl Fn(&mut Vec<String>) -> bool,
) -> Result<bool, ClusterError> {
    for _ in 0..ATTEMPTS {
        let (mut list, revision) = read(store, url).await?;
        if !edit(&mut list) {
            return Ok(false);
        }
        let written = match revision {
            Some(revision) => store
                .update(LOCKS_KEY, encode(&list).into(), revision)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => store
                .create(LOCKS_KEY, encode(&list).into())
                .await
                .map(|_| ())
                .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string())),
        };
        match written {
            Ok(()) => return Ok(true),
            Err((true, _)) => continue,
            Err((false, cause)) => return Err(failure(store, url, "writing", cause)),
        }
    }
    Err(failure(
        store,
        url,
        "writing",
        format!("other writers changed it {ATTEMPTS} times in a row"),
    ))
}

fn encode(list: &[String]) -> Vec<u8> {
    let value = Accepted {
        accepted: list.to_vec(),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

fn failure(store: &Store, url: &str, doing: &str, cause: String) -> ClusterError {
    ClusterError::Store {
        url: url.to_string(),
        what: format!("{doing} key '{LOCKS_KEY}' of bucket {}", store.name),
        cause,
    }
}
