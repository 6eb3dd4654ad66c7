//! Framing, decoding and dispatch of arbitrary client bytes by a real broker.
//!
//! One `rill-broker dev`-like node runs in this process for the whole session (the
//! real quorum, log, groups, on a temp dir). Each input is written as is to a new
//! loopback connection, framing included, and read back until the broker answers
//! everything or closes. Any abort, panic, or allocation past libFuzzer's
//! `-malloc_limit_mb` / `-rss_limit_mb` anywhere in the broker ends the run with the
//! input that caused it.

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rill_broker::config::BrokerConfig;

fn broker() -> SocketAddr {
    static BROKER: OnceLock<SocketAddr> = OnceLock::new();
    *BROKER.get_or_init(|| {
        // A free loopback port, released for the broker to bind.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let mut config = BrokerConfig::dev(addr, dir);
        config.metrics_listen = None;
        // Appends are not fsynced one by one here: the fuzzer measures input handling.
        config
            .set("log.flush.interval.messages", "9223372036854775807")
            .expect("flush policy");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let result = runtime.block_on(rill_broker::run::run(config, move |_| {
                let _ = ready_tx.send(());
            }));
            panic!("the broker stopped: {result:?}");
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("broker ready");
        addr
    })
}

fuzz_target!(|data: &[u8]| {
    let addr = broker();
    let Ok(mut stream) = TcpStream::connect(addr) else {
        panic!("the broker no longer accepts connections");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(data).is_err() {
        return; // closed on us mid-write: a refusal.
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 64 * 1024];
    // Bounded: a long-poll fetch in the input may hold the connection open.
    for _ in 0..64 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
});
