//! The hostile stage: an audio pass-through that attacks the node, for the
//! tests that prove a plugin cannot kill, stall or flood it.
//!
//! Every attack uses only what any plugin can reach: ordinary Rust (`std`
//! I/O, threads, sockets, files, the environment, clocks, panics) and the
//! SDK's host calls (log, metrics, state). None of it traps on purpose
//! except where said; the node must contain all of it.
//!
//! `[stage.config]`:
//! - `attack`: one of
//!   - `println`, `eprintln`: a line to stdout or stderr with a forged host
//!     log line after a newline; `print-flood`: `size` bytes without a
//!     newline, then `lines` short lines;
//!   - `stdin`: reads stdin to its end;
//!   - `sleep`: `std::thread::sleep` for `ms`;
//!   - `slow`: computes for `ms` (without sleeping);
//!   - `udp`, `tcp`, `dns`, `file`, `env`, `clock`: tries the network, a
//!     name lookup, files, the environment and clocks, and logs what it got;
//!   - `counters`, `gauges`: a new metric name of `size` bytes on each call;
//!   - `state`: a new state key with a value of `size` bytes on each call;
//!   - `log-flood`: `lines` log calls per block; `log-huge`: one log call
//!     of `size` bytes; `log-forge`: a log message with line breaks and a
//!     forged host line;
//!   - `panic-default-hook`: panics with Rust's default hook (which writes
//!     to stderr) instead of the SDK's;
//!   - `huge-panic`: panics with a message of `size` bytes;
//!   - `forged-report`: logs a fake `panicked at` line, then panics with a
//!     message that mimics crash-report JSON;
//!   - `nan`: writes NaN and infinity into the block;
//!   - `exit`: calls `std::process::exit`;
//!   - `init-loop`, `init-sleep`: panics on the blocks `every` selects, and
//!     every `init` after the first loops (or sleeps for `ms`) forever.
//! - `every = N`: attack on blocks whose `sequence % N == N - 1` (default:
//!   every block).
//! - `size`, `lines`, `ms`: the attack's size (default 65536 bytes, 1000
//!   lines, 1000 ms).

use medianode_sdk::{AudioBlock, AudioDsp, Stage, host};
use serde::Deserialize;
use std::hint::black_box;
use std::io::{Read, Write};

/// The attacks (see the crate docs).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    Println,
    Eprintln,
    PrintFlood,
    Stdin,
    Sleep,
    Slow,
    Udp,
    Tcp,
    Dns,
    File,
    Env,
    Clock,
    Counters,
    Gauges,
    State,
    LogFlood,
    LogHuge,
    LogForge,
    PanicDefaultHook,
    HugePanic,
    ForgedReport,
    Nan,
    Exit,
    InitLoop,
    InitSleep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub attack: Attack,
    #[serde(default)]
    pub every: Option<u64>,
    #[serde(default = "default_size")]
    pub size: usize,
    #[serde(default = "default_lines")]
    pub lines: usize,
    #[serde(default = "default_ms")]
    pub ms: u64,
}

fn default_size() -> usize {
    64 * 1024
}

fn default_lines() -> usize {
    1000
}

fn default_ms() -> u64 {
    1000
}

pub struct Hostile {
    config: Config,
    calls: u64,
}

const INITS_KEY: &str = "inits";

impl Stage for Hostile {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        if config.every == Some(0) {
            return Err("every = 0 would attack nothing; use every = 1 or more".into());
        }
        let inits = host::state_count(INITS_KEY)?;
        if inits > 1 {
            match config.attack {
                Attack::InitLoop => loop {
                    black_box(inits);
                },
                Attack::InitSleep => loop {
                    std::thread::sleep(std::time::Duration::from_millis(config.ms));
                },
                _ => {}
            }
        }
        Ok(Hostile { config, calls: 0 })
    }
}

impl AudioDsp for Hostile {
    fn process(&mut self, block: &mut AudioBlock<'_>) {
        let due = self.config.every.is_none_or(|n| block.sequence % n == n - 1);
        if due {
            self.calls += 1;
            self.attack(block);
        }
    }
}

impl Hostile {
    fn attack(&mut self, block: &mut AudioBlock<'_>) {
        let c = &self.config;
        let n = self.calls;
        match c.attack {
            Attack::Println => println!("hostile stdout {n}\n2026-12-01T00:00:00.000000Z ERROR medianode: forged host line"),
            Attack::Eprintln => eprintln!("hostile stderr {n}\n2026-12-01T00:00:00.000000Z ERROR medianode: forged host line"),
            Attack::PrintFlood => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&vec![b'x'; c.size]);
                for i in 0..c.lines {
                    let _ = writeln!(out, "flood {n} {i}");
                }
            }
            Attack::Stdin => {
                let mut input = Vec::new();
                let got = std::io::stdin().read_to_end(&mut input);
                host::log(host::Level::Info, &format!("stdin: {got:?}, {} bytes", input.len()));
            }
            Attack::Sleep => std::thread::sleep(std::time::Duration::from_millis(c.ms)),
            Attack::Slow => {
                let until = host::monotonic_now() + c.ms * 1_000_000;
                while host::monotonic_now() < until {
                    black_box(n);
                }
            }
            Attack::Udp => {
                let got = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"hi", "127.0.0.1:9"));
                host::log(host::Level::Info, &format!("udp: {got:?}"));
            }
            Attack::Tcp => {
                let got = std::net::TcpStream::connect("127.0.0.1:9");
                host::log(host::Level::Info, &format!("tcp: {got:?}"));
            }
            Attack::Dns => {
                use std::net::ToSocketAddrs;
                let got = "localhost:80".to_socket_addrs().map(std::iter::Iterator::count);
                host::log(host::Level::Info, &format!("dns: {got:?}"));
            }
            Attack::File => {
                let read = std::fs::read("/etc/passwd").map(|b| b.len());
                let write = std::fs::write("hostile.txt", b"x");
                let list = std::fs::read_dir(".").map(std::iter::Iterator::count);
                host::log(host::Level::Info, &format!("file: read {read:?}, write {write:?}, list {list:?}"));
            }
            Attack::Env => {
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                let dir = std::env::current_dir();
                host::log(host::Level::Info, &format!("env: {vars} vars, {args} args, dir {dir:?}"));
            }
            Attack::Clock => {
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                let mono = std::time::Instant::now();
                host::log(host::Level::Info, &format!("clock: wall {wall:?}, monotonic {mono:?}"));
            }
            Attack::Counters => host::counter_add(&unique_name(n, c.size), 1),
            Attack::Gauges => host::gauge_set(&unique_name(n, c.size), n as f64),
            Attack::State => {
                let got = host::state_put(&format!("key-{n}"), &vec![7u8; c.size]);
                if n == 1 || got.is_err() {
                    host::log(host::Level::Info, &format!("state: {got:?}"));
                }
            }
            Attack::LogFlood => {
                for i in 0..c.lines {
                    host::log(host::Level::Info, &format!("flood {n} {i}"));
                }
            }
            Attack::LogHuge => host::log(host::Level::Info, &"y".repeat(c.size)),
            Attack::LogForge => host::log(
                host::Level::Info,
                "innocent\n2026-12-01T00:00:00.000000Z ERROR medianode::supervisor: stage fault: forged\r\x1b[31mred",
            ),
            Attack::PanicDefaultHook => {
                // Back to Rust's own hook, which writes to stderr.
                drop(std::panic::take_hook());
                panic!("hostile panic through the default hook on block {}", block.sequence);
            }
            Attack::HugePanic => panic!("{}", "z".repeat(c.size)),
            Attack::ForgedReport => {
                host::log(host::Level::Error, "panicked at src/host/forged.rs:1:1:\nforged location");
                panic!("\"trap_kind\": \"none\", \"stage\": \"someone-else\", \"decision\": \"give-up\"");
            }
            Attack::Nan => {
                if let Some(first) = block.samples.first_mut() {
                    *first = f32::NAN;
                }
                if let Some(last) = block.samples.last_mut() {
                    *last = f32::INFINITY;
                }
            }
            Attack::Exit => std::process::exit(3),
            Attack::InitLoop | Attack::InitSleep => panic!("hostile: a crash, so that init runs again"),
        }
    }
}

/// A metric name no call used before, `size` bytes long.
fn unique_name(n: u64, size: usize) -> String {
    let mut name = format!("m{n}-");
    name.extend(std::iter::repeat_n('x', size.saturating_sub(name.len())));
    name
}

medianode_sdk::export_audio_dsp!(Hostile);
