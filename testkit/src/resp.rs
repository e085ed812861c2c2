//! A minimal RESP2 client, for what the `redis` crate does not do: pipelines whose replies mix
//! errors and values, and error lines that are not valid UTF-8 (the module may quote a binary
//! argument in its error, and the `redis` crate drops the connection on such a line).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One reply, as it came over the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `:n`
    Int(i64),
    /// `$n` bulk string, `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `+text`
    Status(Vec<u8>),
    /// `-CODE text`
    Error(Vec<u8>),
    /// `*n` array, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The error line (lossily decoded) if this is an error reply.
    pub fn error(&self) -> Option<String> {
        match self {
            Reply::Error(line) => Some(String::from_utf8_lossy(line).into_owned()),
            _ => None,
        }
    }

    /// The integer, if this is an integer reply.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes of a bulk or status reply; `None` for anything else, including null.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(Some(b)) | Reply::Status(b) => Some(b),
            _ => None,
        }
    }

    /// The five integers of a CHECK/QUOTA reply, or `None` when the reply has another shape.
    pub fn five(&self) -> Option<[i64; 5]> {
        match self {
            Reply::Array(Some(items)) if items.len() == 5 => {
                let mut out = [0i64; 5];
                for (slot, item) in out.iter_mut().zip(items) {
                    *slot = item.int()?;
                }
                Some(out)
            }
            _ => None,
        }
    }
}

/// Appends one command, encoded as a RESP array of bulk strings, to `buf`.
pub fn encode<A: AsRef<[u8]>>(buf: &mut Vec<u8>, args: &[A]) {
    buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        buf.extend_from_slice(arg);
        buf.extend_from_slice(b"\r\n");
    }
}

/// A RESP2 connection.
pub struct RawConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawConn {
    /// Connects to `host`:`port` (a name, or an IPv4 or IPv6 address without brackets).
    pub fn connect(host: &str, port: u16) -> io::Result<RawConn> {
        RawConn::connect_with_timeout(host, port, Duration::from_secs(60))
    }

    /// Like [`RawConn::connect`], with `timeout` for every read and write instead of a minute.
    pub fn connect_with_timeout(host: &str, port: u16, timeout: Duration) -> io::Result<RawConn> {
        let stream = TcpStream::connect((host, port))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply.
    pub fn try_call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        let mut buf = Vec::new();
        encode(&mut buf, args);
        self.writer.write_all(&buf)?;
        self.read_reply()
    }

    /// Sends one command and reads its reply; panics if the connection fails.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("connection failed on {:?}: {e}", show_args(args)))
    }

    /// Sends all commands at once, then reads one reply per command.
    pub fn try_pipeline<A: AsRef<[u8]>>(&mut self, commands: &[Vec<A>]) -> io::Result<Vec<Reply>> {
        let mut buf = Vec::new();
        for command in commands {
            encode(&mut buf, command);
        }
        self.writer.write_all(&buf)?;
        commands.iter().map(|_| self.read_reply()).collect()
    }

    /// Like [`RawConn::try_pipeline`], panicking if the connection fails.
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, commands: &[Vec<A>]) -> Vec<Reply> {
        self.try_pipeline(commands).unwrap_or_else(|e| {
            panic!(
                "connection failed during a pipeline of {}: {e}",
                commands.len()
            )
        })
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(bad("line without CRLF"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_first().ok_or_else(|| bad("empty line"))?;
        let number = || -> io::Result<i64> {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad number"))
        };
        Ok(match kind {
            b':' => Reply::Int(number()?),
            b'+' => Reply::Status(rest.to_vec()),
            b'-' => Reply::Error(rest.to_vec()),
            b'$' => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            },
            b'*' => match number()? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some(
                    (0..n)
                        .map(|_| self.read_reply())
                        .collect::<io::Result<_>>()?,
                )),
            },
            other => return Err(bad(&format!("unexpected reply type {:?}", *other as char))),
        })
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("protocol error: {what}"),
    )
}

/// Arguments for messages: printable ASCII as is, other bytes escaped.
pub fn show_args<A: AsRef<[u8]>>(args: &[A]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| format!("\"{}\"", a.as_ref().escape_ascii()))
        .collect();
    shown.join(" ")
}
