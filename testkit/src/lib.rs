//! The test harness shared by the module's tests (`tests/common`) and the client's
//! (`client/tests/common`): real servers on free loopback ports, each in a temporary directory of
//! its own and killed on `Drop`; Redis Clusters of three masters with one replica each; a raw
//! RESP2 connection; and the binaries of the client's examples.
//!
//! Environment:
//! - `REDIS_SERVER`: the server binary (default `redis-server`; `valkey-server` works too).
//! - `RATELIMIT_MODULE`: the module to load (default `target/release/libredis_ratelimit.so` of
//!   this workspace, under `CARGO_TARGET_DIR` when that is set).
//! - `REDIS_CLI`: the CLI that creates clusters (see [`cluster::cli_binary`]).

pub mod cluster;
pub mod example;
pub mod resp;
pub mod server;
pub mod tls;

pub use resp::{RawConn, Reply};
pub use server::Server;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit lives in the workspace")
}

/// The server binary: `REDIS_SERVER`, or `redis-server` from the `PATH`.
pub fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// The module under test: `RATELIMIT_MODULE`, or the release build of this workspace.
pub fn module_path() -> PathBuf {
    match std::env::var_os("RATELIMIT_MODULE") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("release/libredis_ratelimit.so")
        }
    }
}

/// The module, for `--loadmodule`. Panics with instructions when it has not been built; warns
/// when it looks older than the sources, since `cargo test` does not rebuild a cdylib that no
/// test links against.
pub fn require_module() -> PathBuf {
    let module = module_path();
    let built = match fs::metadata(&module).and_then(|m| m.modified()) {
        Ok(time) => time,
        Err(_) => panic!(
            "the module {} does not exist: run `cargo build --release` (or `make build`) first, \
             or point RATELIMIT_MODULE at a built module",
            module.display()
        ),
    };
    if std::env::var_os("RATELIMIT_MODULE").is_none() {
        let root = workspace_root();
        let newest = [root.join("src"), root.join("core/src")]
            .iter()
            .filter_map(|dir| newest_file(dir))
            .max();
        if newest.is_some_and(|newest| newest > built) {
            eprintln!(
                "warning: {} is older than the sources; run `cargo build --release` to test the \
                 current code",
                module.display()
            );
        }
    }
    module
}

/// The modification time of the newest file under `dir`, recursively.
pub fn newest_file(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(time);
    }
    newest
}

/// A free loopback port; with `cluster_bus`, one whose bus port `port + 10000` is free too.
pub fn free_port(cluster_bus: bool) -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
        let port = listener.local_addr().unwrap().port();
        if !cluster_bus {
            return port;
        }
        let bus_free = port
            .checked_add(10000)
            .is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok());
        if bus_free {
            return port;
        }
    }
    panic!("found no free loopback port whose cluster bus port (+10000) is free too");
}

/// Whether a server on 127.0.0.1:`port` is ready: it answers PING with `+PONG`, or with
/// `-NOAUTH` when it wants a password. A server still loading its data answers `-LOADING`: not
/// ready yet.
pub fn ping(port: u16) -> bool {
    let Ok(mut conn) = RawConn::connect_with_timeout("127.0.0.1", port, Duration::from_secs(1))
    else {
        return false;
    };
    match conn.try_call(&["PING"]) {
        Ok(Reply::Status(pong)) => pong == b"PONG",
        Ok(Reply::Error(error)) => error.starts_with(b"NOAUTH"),
        _ => false,
    }
}

/// Whether a server on the Unix socket `path` answers PING (see [`ping`]).
pub fn ping_unix(path: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 64];
    let mut read = 0;
    while read < reply.len() && !reply[..read].ends_with(b"\r\n") {
        match stream.read(&mut reply[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    reply[..read].starts_with(b"+PONG") || reply[..read].starts_with(b"-NOAUTH")
}

/// `redis://127.0.0.1:<port>/`, with the password if there is one.
pub fn local_url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    }
}
