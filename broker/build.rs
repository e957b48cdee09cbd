//! Generates the RocketMQ 5 gRPC service (`apache.rocketmq.v2`) from the vendored .proto
//! files in `proto/` (see `proto/README.md`). protox parses them in Rust, so the build needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["apache/rocketmq/v2/service.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
