//! The client over TLS (`rediss://`), against a server that listens on TLS only, with a
//! certificate signed by a throwaway CA made for the test and given to the client with
//! `Config::tls_ca_file`: the module and the script decide as over plain TCP; a client that
//! trusts another CA, or the public roots, fails cleanly (a clear error from `ping`, the failure
//! policy's answer from `check`, no panic, no hang).
//!
//! Skipped, with a note on stderr, when the server binary was built without TLS.

mod common;

use ratelimit_client::{Backend, Config, FailurePolicy, Limit, Outcome, RedisStore};
use ratelimit_testkit::Server;
use std::future::Future;
use std::time::Duration;

/// A TLS-only server, with or without the module; `None`, after a note, when the binary has
/// no TLS.
fn tls_server(module: bool) -> Option<Server> {
    match Server::start_tls("ratelimit-client-tls", module, &[] as &[&str]) {
        Ok(server) => Some(server),
        Err(reason) => {
            eprintln!("note: skipped a TLS test: {reason}");
            None
        }
    }
}

/// The server's certificate authority.
fn ca(server: &Server) -> std::path::PathBuf {
    server.tls_files().expect("a TLS server").ca.clone()
}

/// A bound on calls that must fail rather than hang: far above the client's own timeouts.
async fn bounded<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Three admissions of a limit of 3, then a denial, all decided by `backend` in Redis.
async fn checks_limits(store: &RedisStore, backend: Backend) {
    let limit = Limit::fixed(3, Duration::from_secs(60)).unwrap();
    for remaining in [2, 1, 0] {
        let decision = store.check("tls-user", &limit, 1).await.unwrap();
        assert_eq!(decision.backend, backend);
        assert!(decision.is_admitted(), "{decision:?}");
        assert_eq!(decision.remaining, remaining);
    }
    let denied = store.check("tls-user", &limit, 1).await.unwrap();
    assert_eq!(denied.backend, backend);
    assert!(
        matches!(denied.outcome, Outcome::RetryAfter(_)),
        "{denied:?}"
    );
    let quota = store.quota("tls-user", &limit).await.unwrap();
    assert_eq!(quota.used(), 3);
}

#[tokio::test]
async fn the_module_answers_over_tls() {
    let Some(server) = tls_server(true) else {
        return;
    };
    let store = common::connected(Config::new(server.tls_url()).tls_ca_file(ca(&server))).await;
    assert_eq!(store.backend(), Some(Backend::Module));
    checks_limits(&store, Backend::Module).await;
}

#[tokio::test]
async fn the_script_answers_over_tls() {
    let Some(server) = tls_server(false) else {
        return;
    };
    let store = common::connected(
        Config::new(server.tls_url())
            .tls_ca_file(ca(&server))
            .prefix("tls:"),
    )
    .await;
    assert_eq!(store.backend(), Some(Backend::Script));
    checks_limits(&store, Backend::Script).await;
}

#[tokio::test]
async fn a_wrong_ca_fails_cleanly() {
    let Some(server) = tls_server(true) else {
        return;
    };
    let wrong = server.tls_files().unwrap().wrong_ca.clone();
    let limit = Limit::fixed(3, Duration::from_secs(60)).unwrap();
    // Another CA, and the public roots: neither signed the server's certificate.
    for (trust, config) in [
        (
            "another CA",
            Config::new(server.tls_url()).tls_ca_file(&wrong),
        ),
        ("the public roots", Config::new(server.tls_url())),
    ] {
        for (policy, backend, allowed) in [
            (FailurePolicy::Deny, Backend::Deny, false),
            (FailurePolicy::Allow, Backend::Allow, true),
            (FailurePolicy::Local, Backend::Local, true),
        ] {
            let store = RedisStore::new(config.clone().on_failure(policy)).unwrap();
            let error = bounded("ping", store.ping()).await.unwrap_err();
            let text = error.to_string().to_lowercase();
            assert!(
                text.contains("certificate") || text.contains("issuer"),
                "{trust}: ping failed without naming the certificate: {error}"
            );
            assert!(error.is_unreachable(), "{trust}: {error:?}");
            let decision = bounded("check", store.check("tls-user", &limit, 1))
                .await
                .unwrap();
            assert_eq!(decision.backend, backend, "{trust}: {decision:?}");
            assert_eq!(decision.allowed(), allowed, "{trust}: {decision:?}");
        }
    }
    // The server is fine: the right CA gets the module.
    let store = common::connected(Config::new(server.tls_url()).tls_ca_file(ca(&server))).await;
    assert_eq!(store.backend(), Some(Backend::Module));
}

#[tokio::test]
async fn a_bad_ca_file_is_an_invalid_configuration() {
    let Some(server) = tls_server(true) else {
        return;
    };
    let dir = server
        .tls_files()
        .unwrap()
        .ca
        .parent()
        .unwrap()
        .to_path_buf();
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for (what, path) in [
        ("a missing file", dir.join("missing.pem")),
        ("a file without a certificate", not_pem),
        // A private key is PEM, but not a certificate.
        ("a key", server.tls_files().unwrap().key.clone()),
    ] {
        let config = Config::new(server.tls_url()).tls_ca_file(&path);
        let error = RedisStore::new(config)
            .err()
            .unwrap_or_else(|| panic!("{what}: the store opened with {}", path.display()));
        assert!(error.is_invalid_config(), "{what}: {error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{what}: {error}"
        );
    }
    // A CA file with a plain redis:// URL is a mistake, not a silent plain-text connection.
    let plain =
        Config::new(format!("redis://127.0.0.1:{}/", server.port())).tls_ca_file(ca(&server));
    assert!(RedisStore::new(plain).err().unwrap().is_invalid_config());
}
