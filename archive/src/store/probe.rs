//! The start-up probe: a real, signed round trip to the store, so that a
//! wrong secret key, an unreachable endpoint, a missing bucket or a store
//! that ignores put-if-absent stops the process at once with an error that
//! names the cause, instead of surfacing at the first segment.
//!
//! Steps, each under [`PROBE_PREFIX`]: list (reaches the bucket; S3 answers
//! `NoSuchBucket` here, where a put could create it on some stores); put a
//! fresh object with put-if-absent; put it again, which must be refused
//! (the archive's write-once rule depends on it); read it back and compare;
//! delete it (best effort: a bucket with default Object Lock retention may
//! refuse, which is not a failure).

use futures_util::StreamExt as _;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use rand_core::{OsRng, RngCore as _};

use super::StoreError;

/// Where probe objects live (under the configured prefix).
pub const PROBE_PREFIX: &str = "_probe";

/// Probes `store`, named `describe` in errors (no secrets in it).
pub async fn probe(store: &dyn ObjectStore, describe: &str) -> Result<(), StoreError> {
    let prefix = Path::from(PROBE_PREFIX);
    if let Some(Err(e)) = store.list(Some(&prefix)).next().await {
        return Err(classify(describe, "list", e));
    }
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let name = hex::encode(nonce);
    let location = prefix.clone().join(name.as_str());
    let body = format!("chaperone store probe {name}\n").into_bytes();
    let create = || PutOptions::from(PutMode::Create);
    store
        .put_opts(&location, PutPayload::from(body.clone()), create())
        .await
        .map_err(|e| classify(describe, "put", e))?;
    match store
        .put_opts(&location, PutPayload::from(body.clone()), create())
        .await
    {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Ok(_) => {
            return Err(StoreError::NoConditionalPut {
                store: describe.to_owned(),
            });
        }
        Err(e) => return Err(classify(describe, "second put-if-absent", e)),
    }
    let read = store
        .get(&location)
        .await
        .map_err(|e| classify(describe, "get", e))?
        .bytes()
        .await
        .map_err(|e| classify(describe, "get", e))?;
    if read.as_ref() != body.as_slice() {
        return Err(StoreError::ProbeMismatch {
            store: describe.to_owned(),
        });
    }
    if let Err(e) = store.delete(&location).await {
        tracing::warn!(store = describe, object = %location, error = %e, "could not delete the probe object (retention?); left in place");
    }
    tracing::info!(store = describe, "object store probe passed");
    Ok(())
}

/// Turns a probe failure into the cause an operator acts on.
fn classify(describe: &str, operation: &'static str, e: object_store::Error) -> StoreError {
    let store = describe.to_owned();
    let detail = e.to_string();
    match &e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            return StoreError::CredentialsRefused { store, detail };
        }
        // Listing a prefix never finds "nothing": a 404 there is the bucket.
        object_store::Error::NotFound { .. } if operation == "list" => {
            return StoreError::BucketMissing { store, detail };
        }
        _ => {}
    }
    // object_store maps statuses to variants only on some paths (a list's
    // 403 arrives as `Generic`), but S3 names the cause in its error body
    // and object_store keeps the status and body in the message.
    for code in [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "NotSignedUp",
        "AccessDenied",
        "InvalidToken",
        "ExpiredToken",
        "status code: 401",
        "status code: 403",
    ] {
        if detail.contains(code) {
            return StoreError::CredentialsRefused { store, detail };
        }
    }
    if detail.contains("NoSuchBucket") {
        return StoreError::BucketMissing { store, detail };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(http) = err.downcast_ref::<HttpError>()
            && matches!(
                http.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            )
        {
            return StoreError::Unreachable { store, detail };
        }
        source = err.source();
    }
    StoreError::Probe {
        store,
        operation,
        source: e,
    }
}
