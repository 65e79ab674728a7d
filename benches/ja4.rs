//! Cost of fingerprinting a ClientHello, per captured client.
//!
//! `full` is what the proxy pays per connection once the hello bytes are in
//! hand: record reassembly, parsing, JA4 and the stable variant. `parse` is
//! parsing alone, to show where the time goes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tether::fingerprint::{fingerprint, fingerprint_records, parse_client_hello, reassemble};

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/fixtures/clienthello/",
                $name,
                ".hex"
            )),
        )
    };
}

const FIXTURES: [(&str, &str); 7] = [
    fixture!("hello-1"),
    fixture!("hello-2"),
    fixture!("hello-3"),
    fixture!("hello-4"),
    fixture!("hello-5"),
    fixture!("hello-6"),
    fixture!("hello-7"),
];

fn decode(hex: &str) -> Vec<u8> {
    let hex = hex.trim().as_bytes();
    hex.chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("fixture is ASCII hex");
            u8::from_str_radix(s, 16).expect("fixture is hex")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut full = c.benchmark_group("full");
    for (name, hex) in FIXTURES {
        let raw = decode(hex);
        let mut scratch = Vec::with_capacity(raw.len());
        full.bench_function(name, |b| {
            b.iter(|| fingerprint_records(black_box(&raw), &mut scratch).expect("fixture"))
        });
    }
    full.finish();

    let mut parse = c.benchmark_group("parse");
    for (name, hex) in FIXTURES {
        let raw = decode(hex);
        let mut msg = Vec::new();
        reassemble(&raw, &mut msg).expect("fixture");
        parse.bench_function(name, |b| {
            b.iter(|| {
                parse_client_hello(black_box(&msg))
                    .expect("fixture")
                    .legacy_version()
            })
        });
    }
    parse.finish();

    let mut hash = c.benchmark_group("ja4+stable");
    for (name, hex) in FIXTURES {
        let raw = decode(hex);
        let mut msg = Vec::new();
        reassemble(&raw, &mut msg).expect("fixture");
        let hello = parse_client_hello(&msg).expect("fixture");
        hash.bench_function(name, |b| b.iter(|| fingerprint(black_box(&hello))));
    }
    hash.finish();
}

criterion_group! {
    name = benches;
    // The build machine is small; short runs still resolve sub-microsecond work.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
