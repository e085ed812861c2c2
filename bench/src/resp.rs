//! A minimal RESP2 client: enough to pipeline commands, read INFO and load scripts, with no
//! connection manager or type conversion between the benchmark and the socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3 foo`, or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `*-1` (nil).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(text) => Some(text.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(value) => Some(*value),
            _ => None,
        }
    }
}

/// Appends `args` to `out` as one RESP command (an array of bulk strings).
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Skips one complete reply at the start of `buf`: its length and whether it is (or holds) an
/// error; `None` when `buf` does not hold a whole reply yet.
pub fn skip(buf: &[u8]) -> Option<(usize, bool)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = &buf[1..line_end];
    let after = line_end + 2;
    match buf[0] {
        b'+' | b':' => Some((after, false)),
        b'-' => Some((after, true)),
        b'$' => {
            let len: i64 = std::str::from_utf8(line).ok()?.parse().ok()?;
            if len < 0 {
                return Some((after, false));
            }
            let end = after + len as usize + 2;
            (buf.len() >= end).then_some((end, false))
        }
        b'*' => {
            let count: i64 = std::str::from_utf8(line).ok()?.parse().ok()?;
            let mut at = after;
            let mut error = false;
            for _ in 0..count.max(0) {
                let (len, is_error) = skip(&buf[at..])?;
                at += len;
                error |= is_error;
            }
            Some((at, error))
        }
        other => panic!("not a RESP reply: {:?}", other as char),
    }
}

/// A blocking connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects to 127.0.0.1:`port`.
    pub fn open(port: u16) -> io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::with_capacity(1 << 16, stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one command and reads its reply; an error reply is an `Err`.
    pub fn command(&mut self, args: &[&str]) -> io::Result<Reply> {
        self.send(&[args])?;
        match self.read()? {
            Reply::Error(message) => Err(io::Error::other(message)),
            reply => Ok(reply),
        }
    }

    /// Sends one command of byte strings and reads its reply; an error reply is an `Err`.
    pub fn command_bytes(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.writer.write_all(&out)?;
        match self.read()? {
            Reply::Error(message) => Err(io::Error::other(message)),
            reply => Ok(reply),
        }
    }

    /// Writes commands without reading their replies.
    pub fn send(&mut self, commands: &[&[&str]]) -> io::Result<()> {
        let mut out = Vec::new();
        for args in commands {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            encode(&mut out, &args);
        }
        self.writer.write_all(&out)
    }

    /// Writes already encoded commands.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
        let number = || {
            text.parse::<i64>()
                .map_err(|_| io::Error::other(format!("bad RESP length {text:?}")))
        };
        Ok(match line[0] {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Integer(number()?),
            b'$' => match number()? {
                len if len < 0 => Reply::Bulk(None),
                len => {
                    let mut bytes = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut bytes)?;
                    bytes.truncate(len as usize);
                    Reply::Bulk(Some(bytes))
                }
            },
            b'*' => match number()? {
                count if count < 0 => Reply::Array(None),
                count => Reply::Array(Some(
                    (0..count).map(|_| self.read()).collect::<io::Result<_>>()?,
                )),
            },
            other => return Err(io::Error::other(format!("not a RESP reply: {other:?}"))),
        })
    }

    /// `INFO section` as `field -> value` pairs.
    pub fn info(&mut self, section: &str) -> io::Result<Vec<(String, String)>> {
        let text = self.command(&["INFO", section])?.text().unwrap_or_default();
        Ok(text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(field, value)| (field.to_string(), value.trim().to_string()))
            .collect())
    }

    /// One numeric field of `INFO section`.
    pub fn info_number(&mut self, section: &str, field: &str) -> io::Result<f64> {
        self.info(section)?
            .into_iter()
            .find(|(name, _)| name == field)
            .and_then(|(_, value)| value.parse().ok())
            .ok_or_else(|| io::Error::other(format!("INFO {section} has no numeric {field}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_whole_replies_only() {
        let transaction = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n:1\r\n:1\r\n:60000\r\n";
        assert_eq!(skip(transaction), Some((5, false)));
        // "+OK" and three "+QUEUED", then EXEC's array of three integers.
        let exec = 5 + 3 * 9;
        assert_eq!(
            skip(&transaction[exec..]),
            Some((transaction.len() - exec, false))
        );
        assert_eq!(skip(&transaction[exec..transaction.len() - 1]), None);
        assert_eq!(skip(b"$3\r\nfoo\r\n"), Some((9, false)));
        assert_eq!(skip(b"$3\r\nfo"), None);
        assert_eq!(skip(b"*2\r\n:1\r\n-ERR x\r\n"), Some((16, true)));
        assert_eq!(skip(b"$-1\r\n"), Some((5, false)));
    }
}
