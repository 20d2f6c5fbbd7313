//! Decoding remote write requests in Prometheus' live shape: 2,000 series with
//! one sample each (its default `max_samples_per_send`), snappy included.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidewatch_benches::{Cluster, now_ms};
use tidewatch_model::raw_write::decode_raw;
use tidewatch_model::remote_write::{DecodeLimits, Protocol, decode, encode_v1, encode_v2};

const SERIES: usize = 2_000;

fn decode_requests(c: &mut Criterion) {
    let mut cluster = Cluster::new(SERIES, 1);
    let batch = cluster.scrape(0..SERIES, now_ms());
    // 1.0 senders ship metadata in separate requests; 2.0 carries it per series.
    let v1 = encode_v1(&batch);
    let mut with_metadata = batch.clone();
    with_metadata.metadata = Cluster::metadata();
    let v2 = encode_v2(&with_metadata);
    let limits = DecodeLimits::default();
    for (body, protocol) in [(&v1, Protocol::V1), (&v2, Protocol::V2)] {
        let decoded = decode(body, protocol, limits).expect("fixture decodes");
        assert_eq!(decoded.sample_count(), SERIES);
    }

    let mut group = c.benchmark_group("remote_write_decode");
    group.throughput(Throughput::Elements(batch.sample_count() as u64));
    group.bench_function("v1_2000_series", |b| {
        b.iter(|| decode(black_box(&v1), Protocol::V1, limits))
    });
    group.bench_function("v2_2000_series", |b| {
        b.iter(|| decode(black_box(&v2), Protocol::V2, limits))
    });
    // The zero-copy decoders ingestion actually uses.
    group.bench_function("v1_2000_series_raw", |b| {
        b.iter(|| decode_raw(black_box(&v1), Protocol::V1, limits))
    });
    group.bench_function("v2_2000_series_raw", |b| {
        b.iter(|| decode_raw(black_box(&v2), Protocol::V2, limits))
    });
    group.finish();
    eprintln!(
        "remote_write_decode: request bodies (snappy) v1 {} bytes, v2 {} bytes for {SERIES} samples",
        v1.len(),
        v2.len()
    );
}

criterion_group!(benches, decode_requests);
criterion_main!(benches);
