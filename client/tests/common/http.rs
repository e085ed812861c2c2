//! The HTTP examples, run as a user would: the example's binary on a free port, killed on
//! `Drop`, and a plain HTTP/1.1 client over a real socket, so that a test sees exactly what the
//! server sends.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A running example; killed on `Drop`, when its log is printed if the test failed.
pub struct Running {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.log_path).unwrap_or_default();
            eprintln!("the example's log:\n{log}");
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

impl Running {
    /// Starts `binary` on a free port, with `REDIS_URL` set to `redis_url`, and waits until it
    /// prints `listening on http://127.0.0.1:<port>`. `listen` gives the arguments and the
    /// environment that tell it the port.
    pub fn start(binary: PathBuf, redis_url: &str, listen: impl Fn(&mut Command, u16)) -> Running {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mut last_error = String::new();
        // Another process may take the port between the probe and the bind: retry.
        for _ in 0..5 {
            // The example's log, in a file: a pipe that nobody reads could fill and block it.
            let log_path = std::env::temp_dir().join(format!(
                "ratelimit-example-{}-{}.log",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let log = fs::File::create(&log_path).expect("create the example's log");
            let port = ratelimit_testkit::free_port(false);
            let mut command = Command::new(&binary);
            command
                .env("REDIS_URL", redis_url)
                .env_remove("RATELIMIT_PREFIX")
                .env_remove("RATELIMIT_ON_FAILURE")
                .env_remove("RATELIMIT_SHADOW")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log);
            listen(&mut command, port);
            let mut child = command.spawn().expect("run the example");
            let mut line = String::new();
            let stdout = child.stdout.take().unwrap();
            let _ = BufReader::new(stdout).read_line(&mut line);
            if line.starts_with(&format!("listening on http://127.0.0.1:{port}")) {
                return Running {
                    child,
                    port,
                    log_path,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let stderr = fs::read_to_string(&log_path).unwrap_or_default();
            let _ = fs::remove_file(&log_path);
            last_error = format!("{line}{stderr}");
        }
        panic!("the example did not start: {last_error}");
    }

    /// A GET of `path`.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.port, "GET", path, headers)
    }

    /// A POST to `path`, without a body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.port, "POST", path, headers)
    }

    /// The example's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} in {self:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number in {self:?}"))
    }
}

/// One HTTP/1.1 request on a new connection, written by hand.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the example");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {status_line}"));
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').expect("a header line");
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    let reply = Reply {
        status,
        headers,
        body: body.to_string(),
    };
    assert_eq!(reply.header("transfer-encoding"), None, "{reply:?}");
    assert_eq!(reply.number("content-length"), reply.body.len() as u64);
    reply
}
