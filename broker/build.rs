// Compiles proto/rill.proto with protox (pure Rust), so building Rill needs no protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rill.proto");
    let descriptors = protox::compile(["proto/rill.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
