//! A `redis-server` of a test's own (Debian's package; `.ci/run` installs
//! it): on a free loopback port, nothing saved, gone with its handle. The
//! cluster tests and the relay shapes of the `sfu_load` bench share it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Redis {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "notice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; .ci/run installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("redis-server said it is ready before exiting").expect("a line");
            if line.contains("Ready to accept connections") {
                break;
            }
        }
        // Keep draining its output, so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Redis { child, url: format!("redis://127.0.0.1:{port}") }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
