//! Native baselines for the E2EE stage (the plugin's figures come with the
//! plugin): SFrame seal+open of 100- and 1200-byte frames, and an MLS
//! commit (add one member) made by one member and processed by another,
//! in groups of 2, 10 and 50.
//!
//! Run: `cargo bench -p medianode-e2ee --bench e2ee`

use medianode_e2ee::keyring::KeyRing;
use medianode_e2ee::membership::Member;
use medianode_e2ee::sframe_layer::{CipherSuite, Pure};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn sframe() {
    let t = Duration::ZERO;
    let mut ring = KeyRing::<Pure>::new(CipherSuite::AesGcm128Sha256, Duration::ZERO, Duration::ZERO);
    ring.set_epoch(t, 1, vec![7; 16], 0).expect("keys");
    for size in [100usize, 1200] {
        let payload = vec![0x42; size];
        let rounds = 20_000;
        let started = Instant::now();
        for _ in 0..rounds {
            let sealed = ring.seal(b"", black_box(&payload)).expect("sealed");
            black_box(ring.open(t, b"", &sealed, ()));
        }
        let ns = started.elapsed().as_nanos() as f64 / rounds as f64;
        println!("SFrame AES-128-GCM seal+open, {size} B, native (RustCrypto): {ns:.0} ns ({:.0} MB/s)", size as f64 * 2.0 / ns * 1e3);
    }
}

/// A group of `n`: member 0 created it and added the others.
fn group(n: usize) -> Vec<Member> {
    let mut members = vec![Member::new("m0").expect("member")];
    members[0].create_group("bench").expect("group");
    for i in 1..n {
        let joiner = Member::new(&format!("m{i}")).expect("member");
        let commit = members[0].add(&[joiner.key_package().expect("kp")]).expect("add").expect("commit");
        members[0].confirm().expect("merge");
        for m in members.iter_mut().skip(1) {
            m.process(&commit.commit).expect("process");
        }
        let mut joiner = joiner;
        joiner.join(commit.welcome.as_deref().expect("welcome")).expect("join");
        members.push(joiner);
    }
    members
}

fn mls() {
    for n in [2usize, 10, 50] {
        let mut members = group(n);
        let rounds = 20;
        let (mut commit_time, mut process_time) = (Duration::ZERO, Duration::ZERO);
        for r in 0..rounds {
            let joiner = Member::new(&format!("j{r}")).expect("member");
            let package = joiner.key_package().expect("kp");
            let started = Instant::now();
            let commit = members[0].add(&[package]).expect("add").expect("commit");
            members[0].confirm().expect("merge");
            commit_time += started.elapsed();
            let started = Instant::now();
            members[1].process(&commit.commit).expect("process");
            process_time += started.elapsed();
            // Keep the group size: the joiner never joins; remove it again.
            let removal = members[0].remove(&[&format!("j{r}")]).expect("remove").expect("commit");
            members[0].confirm().expect("merge");
            members[1].process(&removal.commit).expect("process");
            for m in members.iter_mut().skip(2) {
                m.process(&commit.commit).expect("process");
                m.process(&removal.commit).expect("process");
            }
        }
        println!(
            "MLS group of {n}, native: commit (add one) {:.2} ms, process {:.2} ms",
            commit_time.as_secs_f64() * 1e3 / rounds as f64,
            process_time.as_secs_f64() * 1e3 / rounds as f64
        );
    }
}

fn main() {
    sframe();
    mls();
}
