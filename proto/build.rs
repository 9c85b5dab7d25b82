//! Compiles the protobuf contracts with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/meridian/v1/model.proto",
        "proto/meridian/v1/hub.proto",
        "proto/meridian/v1/agent.proto",
        "proto/meridian/v1/raft.proto",
        "proto/meridian/v1/store.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    // compile_fds does not emit rerun-if-changed for the inputs.
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
