# One target before every commit: formatting, lints, all tests.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo test --workspace --locked

# Copy a sample tree into a local-directory bucket and list it (no server, no credentials).
demo:
    cargo run --release -q -- cp -r docs /tmp/haul-demo-bucket/docs
    cargo run --release -q -- ls -r /tmp/haul-demo-bucket

# The side-by-side benchmark (see docs/BENCHMARKS.md).
bench *ARGS:
    bench/run {{ARGS}}
