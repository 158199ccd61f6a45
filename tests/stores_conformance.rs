//! What the backup protocol needs from an object store, checked on every backend it runs on:
//! InMemory, LocalFileSystem, MinIO (S3) and Azurite (Azure Blob), the last two real servers
//! from `scripts/objectstore`. Above all: a `PutMode::Create` race on one key has exactly one
//! winner, which is what the fencing relies on.

mod stores;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use stores::Backend;

/// How many writers race, and how many races each backend must win cleanly.
const WRITERS: usize = 8;
const ROUNDS: usize = 5;

async fn put(b: &Backend, key: &str, body: &str) {
    b.store
        .put(&Path::from(key), PutPayload::from(body.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{}: put {key}: {e}", b.name));
}

async fn get(b: &Backend, key: &str) -> String {
    let bytes = b
        .store
        .get(&Path::from(key))
        .await
        .unwrap_or_else(|e| panic!("{}: get {key}: {e}", b.name))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{}: read {key}: {e}", b.name));
    String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{}: {key} not UTF-8: {e}", b.name))
}

async fn list(b: &Backend, prefix: Option<&str>) -> BTreeSet<String> {
    let prefix = prefix.map(Path::from);
    b.store
        .list(prefix.as_ref())
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("{}: list {prefix:?}: {e}", b.name))
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn create() -> PutOptions {
    PutOptions::from(PutMode::Create)
}

#[tokio::test]
async fn put_get_list_delete_round_trip() {
    for b in stores::all().await {
        assert_eq!(
            list(&b, None).await,
            set(&[]),
            "{}: a new store is empty",
            b.name
        );
        put(&b, "a/one", "first").await;
        put(&b, "a/two", "second").await;
        assert_eq!(get(&b, "a/one").await, "first", "{}", b.name);
        assert_eq!(get(&b, "a/two").await, "second", "{}", b.name);
        put(&b, "a/one", "overwritten").await;
        assert_eq!(
            get(&b, "a/one").await,
            "overwritten",
            "{}: plain put overwrites",
            b.name
        );
        let meta = b
            .store
            .head(&Path::from("a/one"))
            .await
            .unwrap_or_else(|e| panic!("{}: head: {e}", b.name));
        assert_eq!(meta.size, 11, "{}: head size", b.name);
        assert_eq!(list(&b, None).await, set(&["a/one", "a/two"]), "{}", b.name);

        b.store
            .delete(&Path::from("a/one"))
            .await
            .unwrap_or_else(|e| panic!("{}: delete: {e}", b.name));
        assert_eq!(
            list(&b, None).await,
            set(&["a/two"]),
            "{}: after delete",
            b.name
        );
        let gone = b.store.get(&Path::from("a/one")).await;
        assert!(
            matches!(gone, Err(object_store::Error::NotFound { .. })),
            "{}: get after delete: {:?}",
            b.name,
            gone.map(|_| "Ok")
        );
    }
}

#[tokio::test]
async fn create_on_an_existing_key_is_already_exists() {
    for b in stores::all().await {
        let key = Path::from("fence/epoch");
        b.store
            .put_opts(&key, PutPayload::from("one"), create())
            .await
            .unwrap_or_else(|e| panic!("{}: Create on a new key: {e}", b.name));
        let again = b
            .store
            .put_opts(&key, PutPayload::from("two"), create())
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{}: Create on an existing key must be AlreadyExists, was {again:?}",
            b.name
        );
        assert_eq!(
            get(&b, "fence/epoch").await,
            "one",
            "{}: the loser wrote nothing",
            b.name
        );
    }
}

/// `WRITERS` tasks race `PutMode::Create` on one new key, `ROUNDS` times: exactly one wins
/// each time, every other gets `AlreadyExists`, and the object holds the winner's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_has_exactly_one_winner() {
    for b in stores::all().await {
        for round in 0..ROUNDS {
            let key = Path::from(format!("race/create-{round}"));
            let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
            let tasks: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let store = Arc::clone(&b.store);
                    let key = key.clone();
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        let body = format!("writer {w} round {round}");
                        let r = store
                            .put_opts(&key, PutPayload::from(body.clone()), create())
                            .await;
                        (body, r)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (body, r) = t.await.expect("writer task");
                match r {
                    Ok(_) => winners.push(body),
                    Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => panic!(
                        "{}: round {round}: a losing Create must be AlreadyExists: {e}",
                        b.name
                    ),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{}: round {round}: {WRITERS} concurrent Creates on one key must have exactly one winner, had {winners:?}",
                b.name
            );
            assert_eq!(
                get(&b, key.as_ref()).await,
                winners[0],
                "{}: round {round}: the object holds the winner's bytes",
                b.name
            );
        }
        eprintln!(
            "{}: {ROUNDS}/{ROUNDS} Create races had exactly one winner",
            b.name
        );
    }
}

/// `WRITERS` tasks race `PutMode::Update` with the same version, `ROUNDS` times: exactly one
/// wins, every other gets `Precondition`. LocalFileSystem has no `Update` (NotImplemented).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_update_has_exactly_one_winner() {
    for b in stores::all().await {
        let key = Path::from("race/update");
        let first = b
            .store
            .put_opts(&key, PutPayload::from("v0"), create())
            .await
            .unwrap_or_else(|e| panic!("{}: Create: {e}", b.name));
        let probe = b
            .store
            .put_opts(
                &key,
                PutPayload::from("v0"),
                PutOptions::from(PutMode::Update(UpdateVersion::from(first))),
            )
            .await;
        if b.name == "filesystem" {
            assert!(
                matches!(probe, Err(object_store::Error::NotImplemented { .. })),
                "{}: Update was {probe:?}; if it works now, race it too",
                b.name
            );
            continue;
        }
        let mut current =
            probe.unwrap_or_else(|e| panic!("{}: Update with the current version: {e}", b.name));
        for round in 0..ROUNDS {
            let version = UpdateVersion::from(current.clone());
            let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
            let tasks: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let store = Arc::clone(&b.store);
                    let key = key.clone();
                    let version = version.clone();
                    let barrier = Arc::clone(&barrier);
                    tokio::spawn(async move {
                        barrier.wait().await;
                        // Unique bytes: S3 ETags are content hashes (OBJECTSTORES.md, gotcha 1).
                        let body = format!("writer {w} round {round}");
                        let r = store
                            .put_opts(
                                &key,
                                PutPayload::from(body.clone()),
                                PutOptions::from(PutMode::Update(version)),
                            )
                            .await;
                        (body, r)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                let (body, r) = t.await.expect("writer task");
                match r {
                    Ok(put) => winners.push((body, put)),
                    Err(object_store::Error::Precondition { .. }) => {}
                    Err(e) => panic!(
                        "{}: round {round}: a losing Update must be Precondition: {e}",
                        b.name
                    ),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{}: round {round}: {WRITERS} concurrent Updates with one version must have exactly one winner, had {:?}",
                b.name,
                winners.iter().map(|w| &w.0).collect::<Vec<_>>()
            );
            let (body, put) = winners.pop().expect("one winner");
            assert_eq!(
                get(&b, key.as_ref()).await,
                body,
                "{}: round {round}: the winner's bytes",
                b.name
            );
            current = put;
        }
        eprintln!(
            "{}: {ROUNDS}/{ROUNDS} Update races had exactly one winner",
            b.name
        );
    }
}

#[tokio::test]
async fn deleting_a_missing_key_is_ok_or_not_found() {
    for b in stores::all().await {
        let r = b.store.delete(&Path::from("never/written")).await;
        assert!(
            matches!(r, Ok(()) | Err(object_store::Error::NotFound { .. })),
            "{}: delete of a missing key must be Ok or NotFound, was {r:?}",
            b.name
        );
    }
}

#[tokio::test]
async fn list_with_a_prefix_returns_only_that_prefix() {
    for b in stores::all().await {
        for key in [
            "snap/1/a",
            "snap/1/b",
            "snap/10/a",
            "snap/2/a",
            "snapshot",
            "other/x",
        ] {
            put(&b, key, key).await;
        }
        assert_eq!(
            list(&b, Some("snap/1")).await,
            set(&["snap/1/a", "snap/1/b"]),
            "{}: prefix snap/1 (a path prefix: not snap/10)",
            b.name
        );
        assert_eq!(
            list(&b, Some("snap")).await,
            set(&["snap/1/a", "snap/1/b", "snap/10/a", "snap/2/a"]),
            "{}: prefix snap (not snapshot)",
            b.name
        );
        assert_eq!(
            list(&b, Some("none")).await,
            set(&[]),
            "{}: unknown prefix",
            b.name
        );
    }
}

/// Each call gives new, empty stores: tests never see each other's objects.
#[tokio::test]
async fn every_call_gives_fresh_empty_stores() {
    let first = stores::all().await;
    for b in &first {
        put(b, "marker", "x").await;
    }
    let second = stores::all().await;
    let names: Vec<_> = second.iter().map(|b| b.name).collect();
    assert_eq!(names, ["memory", "filesystem", "minio", "azurite"]);
    for (a, b) in first.iter().zip(&second) {
        if b.name != "memory" {
            assert_ne!(
                a.location, b.location,
                "{}: a new bucket/container/folder",
                b.name
            );
        }
        assert_eq!(
            list(b, None).await,
            set(&[]),
            "{}: a new store is empty",
            b.name
        );
    }
}

/// The bucket-secret YAML reaches the same bucket/container through `storage::bucket`, and the
/// store built from it honours Create the same way.
#[tokio::test]
async fn secret_yaml_reaches_the_same_servers() {
    for b in [stores::minio().await, stores::azurite().await] {
        let yaml = match b.name {
            "minio" => stores::s3_secret_yaml(&b.location),
            _ => stores::azure_secret_yaml(&b.location),
        };
        let bucket = cost_model::storage::bucket::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{}: secret YAML does not parse: {e}\n{yaml}", b.name));
        let from_secret: Arc<dyn ObjectStore> = bucket.store;
        put(&b, "via/direct", "direct").await;
        let got = from_secret
            .get(&Path::from("via/direct"))
            .await
            .unwrap_or_else(|e| panic!("{}: get through the secret's store: {e}\n{yaml}", b.name))
            .bytes()
            .await
            .expect("read");
        assert_eq!(&got[..], b"direct", "{}", b.name);
        let again = from_secret
            .put_opts(&Path::from("via/direct"), PutPayload::from("x"), create())
            .await;
        assert!(
            matches!(again, Err(object_store::Error::AlreadyExists { .. })),
            "{}: Create through the secret's store: {again:?}",
            b.name
        );
    }
}

/// The signing helpers against published vectors (RFC 4231 case 2, RFC 4648).
#[test]
fn signing_helpers_match_known_vectors() {
    assert_eq!(
        hex::encode(stores::hmac_sha256(
            b"Jefe",
            b"what do ya want for nothing?"
        )),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let long_key = [0xaau8; 131];
    assert_eq!(
        hex::encode(stores::hmac_sha256(
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    for (raw, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(stores::base64_encode(raw.as_bytes()), enc);
        assert_eq!(stores::base64_decode(enc).as_deref(), Some(raw.as_bytes()));
    }
    assert_eq!(stores::base64_decode("Zm9"), None);
    assert_eq!(stores::base64_decode("Zm9*"), None);
}
