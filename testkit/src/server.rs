//! One server process: `REDIS_SERVER` on a free loopback port, with or without the module, in a
//! temporary directory of its own; restartable on the same port; killed, and its directory
//! removed, on `Drop`.

use crate::tls::{lacks_tls, TlsFiles};
use crate::{free_port, local_url, ping, ping_unix, require_module, server_binary};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it is started (or restarted, which may
/// include loading its AOF).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running server. Killed, and its directory removed, on `Drop`; when the test is panicking,
/// the last lines of its log are printed first.
pub struct Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    module: bool,
    args: Vec<String>,
    tls: Option<TlsFiles>,
}

impl Server {
    /// Starts a server in a new directory `<temp>/<name>-<pid>-<n>`, with the module
    /// (`module`) or without it, and the extra command-line options `args`. The module comes
    /// right before `args`, so words at the start of `args` that are not `--options` are the
    /// module's arguments. An option given in `args` replaces the harness's default for it
    /// (`--save ""`, `--appendonly no`, and with `--cluster-enabled`, a `--cluster-config-file`
    /// in the server's directory). A cluster node gets a port whose bus port is free too.
    pub fn start<S: AsRef<str>>(name: &str, module: bool, args: &[S]) -> Server {
        match Server::start_maybe_tls(name, module, args, false) {
            Ok(server) => server,
            Err(error) => panic!("{error}"),
        }
    }

    /// Like [`Server::start`], a server that serves TLS only: `--port 0`, and `--tls-port` on
    /// the free port, with a throwaway CA and certificate made for it ([`Server::tls_files`]),
    /// clients not asked for a certificate. The harness itself reaches it on a Unix socket in
    /// its directory. Fails, with the reason, when the server binary was built without TLS
    /// (the test should then skip with a note); panics on any other failure.
    pub fn start_tls<S: AsRef<str>>(
        name: &str,
        module: bool,
        args: &[S],
    ) -> Result<Server, String> {
        Server::start_maybe_tls(name, module, args, true)
    }

    fn start_maybe_tls<S: AsRef<str>>(
        name: &str,
        module: bool,
        args: &[S],
        tls: bool,
    ) -> Result<Server, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("data")).expect("create the server's directory");
        let mut server = Server {
            child: None,
            port: 0,
            root,
            module,
            args: args.iter().map(|a| a.as_ref().to_string()).collect(),
            tls: None,
        };
        if tls {
            server.tls = Some(TlsFiles::generate(&server.root.join("tls")));
        }
        // A cluster node also listens on its bus port, `port + 10000`: both must be free.
        let cluster_bus = server.has_option("--cluster-enabled");
        // Another process may take the port between our probe and the server's bind: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            server.port = free_port(cluster_bus);
            // A node that failed to bind may have written its cluster config for that port.
            let _ = fs::remove_file(server.root.join("nodes.conf"));
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) if error.contains("Address already in use") => last_error = error,
                Err(error) if tls && lacks_tls(&error) => {
                    let reason = error
                        .lines()
                        .find(|line| lacks_tls(line))
                        .unwrap_or_default();
                    return Err(format!("{} has no TLS: {}", server_binary(), reason.trim()));
                }
                Err(error) => panic!("{error}"),
            }
        }
        panic!("{last_error}");
    }

    /// The certificates of a server started with [`Server::start_tls`].
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// `rediss://127.0.0.1:<port>/`, for a server started with [`Server::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    /// The Unix socket of a TLS server, which the harness uses to reach it without TLS.
    pub fn unix_socket(&self) -> PathBuf {
        self.root.join("redis.sock")
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        local_url(self.port, None)
    }

    /// The server's working directory (`--dir`): its AOF and RDB files live here.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Whether `name` (e.g. `--cluster-enabled`) is among the extra options.
    pub fn has_option(&self, name: &str) -> bool {
        self.args.iter().any(|a| a.eq_ignore_ascii_case(name))
    }

    /// The server's log, followed by what it wrote on stdout and stderr, if anything.
    pub fn log(&self) -> String {
        let mut text = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let stdio = fs::read_to_string(self.root.join("stdio.log")).unwrap_or_default();
        if !stdio.trim().is_empty() {
            text.push_str("\n--- stdout/stderr ---\n");
            text.push_str(&stdio);
        }
        text
    }

    /// Kills the server (SIGKILL: nothing is flushed at exit).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port, in the same directory, with the
    /// same options; waits until it has loaded its data.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(error)
                    if error.contains("Address already in use") && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(error) => panic!("{error}"),
            }
        }
    }

    /// Like [`Server::restart`], with the module or without it and other extra options.
    pub fn restart_with<S: AsRef<str>>(&mut self, module: bool, args: &[S]) {
        self.module = module;
        self.args = args.iter().map(|a| a.as_ref().to_string()).collect();
        self.restart();
    }

    fn spawn(&mut self) -> Result<(), String> {
        let has = |name: &str| self.has_option(name);
        let mut command = Command::new(server_binary());
        match &self.tls {
            None => {
                command.arg("--port").arg(self.port.to_string());
            }
            Some(files) => {
                command.args(["--port", "0", "--tls-port", &self.port.to_string()]);
                command.args(files.server_args());
                command.arg("--unixsocket").arg(self.unix_socket());
            }
        }
        command.args(["--bind", "127.0.0.1"]);
        if !has("--save") {
            command.args(["--save", ""]);
        }
        if !has("--appendonly") {
            command.args(["--appendonly", "no"]);
        }
        command.arg("--dir").arg(self.data_dir());
        command.arg("--logfile").arg(self.root.join("server.log"));
        if has("--cluster-enabled") && !has("--cluster-config-file") {
            command
                .arg("--cluster-config-file")
                .arg(self.root.join("nodes.conf"));
        }
        if self.module {
            command.arg("--loadmodule").arg(require_module());
        }
        command.args(&self.args);
        let stdio = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("stdio.log"))
            .map_err(|e| format!("cannot create the server's log: {e}"))?;
        command
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().map_err(|e| e.to_string())?)
            .stderr(stdio);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // The server dies with the test thread that started it, even if the test binary is
            // killed and no `Drop` runs.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| {
            format!(
                "cannot run the server binary `{}` ({e}); install redis-server or set REDIS_SERVER",
                server_binary()
            )
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "{} exited ({status}) before answering PING; its log:\n{}",
                    server_binary(),
                    self.log()
                ));
            }
            let ready = match self.tls {
                None => ping(self.port),
                Some(_) => ping_unix(&self.unix_socket()),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "{} did not answer PING within {START_TIMEOUT:?}; its log:\n{}",
                    server_binary(),
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() && self.child.is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!(
                "--- last lines of the log of the server on port {} ---",
                self.port
            );
            eprintln!("{}", tail.join("\n"));
        }
        self.kill();
        let _ = fs::remove_dir_all(&self.root);
    }
}
