//! A load driver for what `redis-benchmark` cannot send: a request of several commands (the
//! seed's `MULTI; INCRBY; PEXPIRE NX; PTTL; EXEC`, a CHECK and its REFUND) or of several keys of
//! one user (`RATELIMIT.MCHECK`), on random keys, from many connections with pipelining, like
//! `redis-benchmark -c 50 -r 100000 -P 16`. The key sequence of each connection is fixed, so
//! that callgrind counts the same requests on every run.
//!
//! One thread runs every connection on a single-threaded Tokio runtime, as `redis-benchmark`
//! runs them on one event loop, so that the driver takes one core and leaves the other to the
//! server. The same driver also measures plain `INCR`, so that the ratio of the two compares like
//! with like.

use crate::resp;
use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The placeholder of a request's key number in a [`Template`]'s words.
pub const KEY: &str = "KEY";

/// A request: one or more commands sent together, each answered by one reply.
///
/// Commands are given as words separated by spaces. In any word, `KEY` stands for the request's
/// number in 12 digits, as `redis-benchmark` renders `__rand_int__`: `INCR KEY` sends
/// `INCR 000000000042`, and `rl:{uKEY}:a` a key with a hash tag. Every occurrence in a request
/// gets the same number, so that one request can name several keys of one user.
#[derive(Debug, Clone)]
pub struct Template {
    /// The encoded request for key number 0.
    prototype: Vec<u8>,
    /// Where the 12 digits of each occurrence of the key number start in `prototype`.
    digits: Vec<usize>,
    replies: usize,
}

impl Template {
    /// A request of `commands`.
    pub fn new(commands: &[&str]) -> Template {
        let number = "0".repeat(12);
        let mut prototype = Vec::new();
        let mut digits = Vec::new();
        for command in commands {
            let words: Vec<&str> = command.split_whitespace().collect();
            prototype.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
            for word in words {
                let arg = word.replace(KEY, &number);
                prototype.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                let start = prototype.len();
                // Each occurrence moves the next one 9 bytes right (12 digits for 3 letters).
                for (index, (at, _)) in word.match_indices(KEY).enumerate() {
                    digits.push(start + at + index * (number.len() - KEY.len()));
                }
                prototype.extend_from_slice(arg.as_bytes());
                prototype.extend_from_slice(b"\r\n");
            }
        }
        Template {
            prototype,
            digits,
            replies: commands.len(),
        }
    }

    /// A request of one command.
    pub fn command(words: &str) -> Template {
        Template::new(&[words])
    }

    /// The number of replies one request gets.
    pub fn replies(&self) -> usize {
        self.replies
    }

    /// Appends the request for key number `n` (below 10^12) to `out`.
    pub fn render(&self, out: &mut Vec<u8>, mut n: u64) {
        let start = out.len();
        out.extend_from_slice(&self.prototype);
        let mut digits = [b'0'; 12];
        for digit in digits.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        for &at in &self.digits {
            out[start + at..start + at + 12].copy_from_slice(&digits);
        }
    }
}

/// How hard to drive the server.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Concurrent connections (`-c`).
    pub connections: usize,
    /// Requests in flight on each connection (`-P`).
    pub pipeline: usize,
    /// Requests in all (`-n`).
    pub requests: u64,
    /// Keys are drawn uniformly from `0..keyspace` (`-r`).
    pub keyspace: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Requests per second, from the first write to the last reply.
    pub per_second: f64,
    /// The run's duration.
    pub elapsed: Duration,
}

/// Sends `load.requests` requests of `template` to 127.0.0.1:`port` and measures the rate.
/// Fails on a connection error, or when any reply is an error.
pub fn run(port: u16, template: &Template, load: Load) -> io::Result<Outcome> {
    run_spread(&[(port, None)], template, load)
}

/// Like [`run`], over several servers: the masters of a cluster, each with the key numbers
/// whose keys it owns. The connections are dealt to the servers in turn, and each draws its
/// keys uniformly from its server's list (from `0..load.keyspace` when it has none), so that
/// with lists that split the keyspace by slot, the load is that of keys drawn uniformly over
/// the whole keyspace and sent to their owners, as a cluster client does. `load.requests` is
/// the total over every connection.
pub fn run_spread(
    targets: &[(u16, Option<Rc<Vec<u64>>>)],
    template: &Template,
    load: Load,
) -> io::Result<Outcome> {
    assert!(!targets.is_empty(), "no server to send to");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let left = Rc::new(Cell::new(load.requests));
                let mut streams = Vec::with_capacity(load.connections);
                for index in 0..load.connections {
                    let (port, keys) = &targets[index % targets.len()];
                    let stream = TcpStream::connect(("127.0.0.1", *port)).await?;
                    stream.set_nodelay(true)?;
                    streams.push((stream, keys.clone()));
                }
                let started = Instant::now();
                let tasks: Vec<_> = streams
                    .into_iter()
                    .enumerate()
                    .map(|(index, (stream, keys))| {
                        let left = Rc::clone(&left);
                        let template = template.clone();
                        tokio::task::spawn_local(connection(
                            stream, template, load, keys, left, index,
                        ))
                    })
                    .collect();
                for task in tasks {
                    task.await.map_err(io::Error::other)??;
                }
                let elapsed = started.elapsed();
                Ok(Outcome {
                    per_second: load.requests as f64 / elapsed.as_secs_f64(),
                    elapsed,
                })
            })
            .await
    })
}

async fn connection(
    mut stream: TcpStream,
    template: Template,
    load: Load,
    keys: Option<Rc<Vec<u64>>>,
    left: Rc<Cell<u64>>,
    index: usize,
) -> io::Result<()> {
    let mut random = Random::new(index as u64 + 1);
    let mut out = Vec::with_capacity(4096);
    let mut input = vec![0u8; 1 << 16];
    let mut filled = 0usize;
    loop {
        let batch = left.get().min(load.pipeline as u64);
        if batch == 0 {
            return Ok(());
        }
        left.set(left.get() - batch);
        out.clear();
        for _ in 0..batch {
            let key = match &keys {
                Some(keys) => keys[random.below(keys.len() as u64) as usize],
                None => random.below(load.keyspace),
            };
            template.render(&mut out, key);
        }
        stream.write_all(&out).await?;
        let mut expected = batch as usize * template.replies();
        while expected > 0 {
            let mut at = 0;
            while expected > 0 {
                match resp::skip(&input[at..filled]) {
                    Some((len, false)) => {
                        at += len;
                        expected -= 1;
                    }
                    Some((_, true)) => {
                        let text = String::from_utf8_lossy(&input[at..filled]);
                        return Err(io::Error::other(format!("error reply: {text:.200}")));
                    }
                    None => break,
                }
            }
            input.copy_within(at..filled, 0);
            filled -= at;
            if expected > 0 {
                if filled == input.len() {
                    input.resize(input.len() * 2, 0);
                }
                let read = stream.read(&mut input[filled..]).await?;
                if read == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed",
                    ));
                }
                filled += read;
            }
        }
    }
}

/// Sends the request of `template` once for each key number of `keys`, in pipelined batches
/// on one connection: to fill a server with a known number of keys.
pub fn fill(
    conn: &mut resp::Connection,
    template: &Template,
    keys: impl IntoIterator<Item = u64>,
) -> io::Result<()> {
    const BATCH: usize = 1000;
    let keys: Vec<u64> = keys.into_iter().collect();
    let mut out = Vec::new();
    for batch in keys.chunks(BATCH) {
        out.clear();
        for &n in batch {
            template.render(&mut out, n);
        }
        conn.send_raw(&out)?;
        for _ in 0..batch.len() * template.replies() {
            if let resp::Reply::Error(message) = conn.read()? {
                return Err(io::Error::other(message));
            }
        }
    }
    Ok(())
}

/// xorshift64*: uniform enough for picking keys, and cheap.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_transaction() {
        let template = Template::new(&["MULTI", "INCRBY m:KEY 1", "EXEC"]);
        let mut out = Vec::new();
        template.render(&mut out, 42);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*1\r\n$5\r\nMULTI\r\n*3\r\n$6\r\nINCRBY\r\n$14\r\nm:000000000042\r\n$1\r\n1\r\n\
             *1\r\n$4\r\nEXEC\r\n"
        );
        assert_eq!(template.replies(), 3);
    }

    #[test]
    fn gives_every_key_of_a_request_the_same_number() {
        let template = Template::command("MCHECK 2 {uKEY}:a {uKEY}:b:KEY LIMIT 5 1s");
        let mut out = Vec::new();
        template.render(&mut out, 123_456_789_012);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "*7\r\n$6\r\nMCHECK\r\n$1\r\n2\r\n$17\r\n{u123456789012}:a\r\n\
             $30\r\n{u123456789012}:b:123456789012\r\n$5\r\nLIMIT\r\n$1\r\n5\r\n$2\r\n1s\r\n"
        );
    }
}
