//! Criterion benchmarks for FerroMQ; the benches live in `benches/benches/`.
